"""The Python API (``fqtool.load_model``): every input kind, the documented examples, and the CLI using it."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import fqtool
from _ijb_fixture import write_ijb_release
from _photos import Placement, make_photo
from fqtool.cli.app import app
from fqtool.errors import FqtoolError
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
FACES = Path(__file__).parent / "data" / "faces"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """model.safetensors (iresnet_tiny with a quality head, random), faces/ (6 real faces), pairs.bin."""
    from fqtool.data.binfile import save_bin

    root = tmp_path_factory.mktemp("api")
    torch.manual_seed(0)
    save_checkpoint(create_model("iresnet_tiny", quality_head=True).eval(), root / "model.safetensors")
    faces = sorted(FACES.glob("*.jpg"))[:6]
    (root / "faces").mkdir()
    for face in faces:
        shutil.copy(face, root / "faces" / face.name)
    images = [f.read_bytes() for f in faces[:4]] * 2
    save_bin(root / "pairs.bin", images, [True, False, True, False])
    (root / "photos").mkdir()  # photos for align and score(align=True), an IJB set for verify
    for i, face in enumerate((6, 9)):
        photo, _ = make_photo([Placement(face, 90, 40, 1.0, 10 * i)], size=(240, 320), seed=i)
        Image.fromarray(photo).save(root / "photos" / f"{i}.jpg", quality=95)
    write_ijb_release(root / "IJB_release", "IJBC", templates_per_id=2, impostors=40, seed=0)
    return root


@pytest.fixture(scope="module")
def model(workdir):
    return fqtool.load_model(workdir / "model.safetensors", device="cpu")


def test_documented_examples_run(workdir, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(workdir)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["emb"].shape == (6, namespace["model"].embedding_size)
    assert np.allclose(np.linalg.norm(namespace["unit"], axis=1), 1.0, atol=1e-5)
    assert len(namespace["result"]) == 6 and (workdir / "faces_quality.csv").is_file()
    assert 0.0 <= namespace["res"].accuracy <= 1.0 and namespace["res"].num_pairs == 4
    assert len(namespace["run"].faces) == 2 and len(namespace["scores"]) == 2
    assert [r.protocol for r in namespace["ijb"].results] == ["insightface", "quality"]
    assert {"model:norm", "model:head"} <= {row["method"] for row in namespace["curves"].summary()}
    assert (workdir / "verify.csv").is_file() and (workdir / "pairs-erc" / "summary.csv").is_file()
    assert namespace["quiet_report"].to_dict() == namespace["report"].to_dict()


def test_every_input_kind_gives_the_same_numbers(model) -> None:
    paths = sorted(FACES.glob("*.jpg"))[:3]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    reference = model.embed([str(p) for p in paths])
    same = {
        "Path list": model.embed(paths),
        "PIL list": model.embed([Image.open(p) for p in paths]),
        "HWC arrays": model.embed(arrays),
        "NHWC batch": model.embed(np.stack(arrays)),
        "NCHW tensor": model.embed(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)),
    }
    for kind, emb in same.items():
        np.testing.assert_allclose(emb, reference, rtol=1e-5, atol=1e-5, err_msg=kind)
    one = model.embed(str(paths[1]))
    np.testing.assert_allclose(one[0], reference[1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(reference[0], reference[1])  # different faces really differ
    # quality: norm method = the embedding's norm; the head differs from it
    np.testing.assert_allclose(model.quality(paths, method="norm"), np.linalg.norm(reference, axis=1),
                               rtol=1e-5)
    head = model.quality(paths)
    assert head.shape == (3,) and ((head >= 0) & (head <= 1)).all()


def test_other_sizes_are_resized(model) -> None:
    big = np.asarray(Image.open(sorted(FACES.glob("*.jpg"))[0]).convert("RGB").resize((224, 224)))
    assert model.embed(big).shape == (1, model.embedding_size)


@pytest.mark.parametrize(
    ("images", "needle"),
    [
        (np.zeros((112, 112, 3), np.float32), "uint8"),
        (np.zeros((112, 112, 4), np.uint8), "H×W×3"),
        ("no/such/face.jpg", "no such file"),
        ([], "no images"),
        (3.5, "cannot read an image from float"),
    ],
)
def test_bad_images_are_one_line_errors(model, images, needle) -> None:
    with pytest.raises(FqtoolError, match=needle) as info:
        model.embed(images)
    assert "\n" not in str(info.value)


def test_score_cli_uses_the_api(workdir, model, tmp_path) -> None:
    out = tmp_path / "q.csv"
    weights = str(workdir / "model.safetensors")
    result = CliRunner().invoke(app, ["score", str(workdir / "faces"), "-w", weights,
                                      "-o", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        rows = {Path(r["path"]).name: float(r["quality"]) for r in csv.DictReader(handle)}
    api = model.score(workdir / "faces")
    assert len(rows) == len(api) == 6
    for name, quality in zip(api.names, api.quality, strict=True):
        assert rows[Path(name).name] == pytest.approx(float(quality), rel=1e-4)


def test_verify_cli_and_api_agree(workdir, model) -> None:
    res = fqtool.verify(model, workdir / "pairs.bin")
    weights = str(workdir / "model.safetensors")
    out = CliRunner().invoke(app, ["verify", str(workdir / "pairs.bin"), "-w", weights, "--device", "cpu",
                                   "-q"])
    assert out.exit_code == 0, out.output
    assert f"{100 * res.accuracy:.2f}" in out.output
