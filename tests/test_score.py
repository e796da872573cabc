"""``fqtool score`` / ``fqtool.eval.scoring`` on a folder, a list file and a .rec, with broken images."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.data.datasets import open_dataset
from fqtool.eval.scoring import DEFAULT_CALIBRATION, default_output, fit_calibration, score_dataset
from fqtool.models import QualityCalibration, create_model
from fqtool.models.checkpoint import save_checkpoint
from fqtool.models.loading import NO_WEIGHTS_MESSAGE, load_model

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("iresnet_tiny", quality_head=True)
    model.info.calibration = QualityCalibration(0.3, 0.7, "test")
    return save_checkpoint(model, tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two identity folders with 3 JPEG/PNG images each, one broken file and one non-image file."""
    root = tmp_path_factory.mktemp("faces") / "faces"
    rng = np.random.default_rng(0)
    for person in ("alice", "bob"):
        (root / person).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / person / f"{i}.{'png' if i == 2 else 'jpg'}")
    (root / "bob" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "bob" / "notes.txt").write_text("ignored")
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_score_folder_with_broken_image(tiny_weights: Path, faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.csv"
    emb = tmp_path / "e.npy"
    result = runner.invoke(app, ["score", str(faces), "-w", str(tiny_weights), "-o", str(out), "-j", "0",
                                 "-q", "--save-embeddings", str(emb), "--top", "2", "--bottom", "2",
                                 "--plot", str(tmp_path / "h.png")])
    assert result.exit_code == 0, result.output
    assert "1 of 7 images could not be read" in result.stderr and "bob/broken.jpg" in result.stderr
    rows = _rows(out)
    assert list(rows[0]) == ["path", "quality", "quality_100", "norm", "label"]
    assert [r["path"] for r in rows] == [f"{p}/{i}.{'png' if i == 2 else 'jpg'}"
                                         for p in ("alice", "bob") for i in range(3)]
    assert [r["label"] for r in rows] == ["0"] * 3 + ["1"] * 3

    # The CSV agrees with the model run directly, with the checkpoint's calibration (head, 0.3..0.7).
    model = load_model(tiny_weights)
    images = torch.stack([torch.from_numpy(np.array(Image.open(faces / r["path"]).convert("RGB")))
                          .permute(2, 0, 1) for r in rows])
    with torch.no_grad():
        embedding, quality = model(model.prepare(images))
    assert [float(r["quality"]) for r in rows] == pytest.approx(quality.tolist(), rel=1e-4)
    expected_100 = (100 * ((quality - 0.3) / 0.4).clamp(0, 1)).tolist()
    assert [float(r["quality_100"]) for r in rows] == pytest.approx(expected_100, abs=0.01)
    assert [float(r["norm"]) for r in rows] == pytest.approx(embedding.norm(dim=1).tolist(), rel=1e-4)
    np.testing.assert_allclose(np.load(emb), embedding.numpy(), rtol=1e-4, atol=1e-5)
    assert (tmp_path / "h.png").stat().st_size > 1000
    assert "best 2" in result.stdout and "worst 2" in result.stdout and "scored 6 images" in result.stdout


def test_score_list_file_norm_method_and_sort(tiny_weights: Path, faces: Path, tmp_path: Path) -> None:
    listing = tmp_path / "faces.txt"
    listing.write_text("".join(f"{faces}/alice/{i}.jpg\n" for i in range(2)) + f"{faces}/bob/missing.jpg\n")
    out = tmp_path / "sorted.csv"
    result = runner.invoke(app, ["score", str(listing), "-w", str(tiny_weights), "--method", "norm",
                                 "--sort", "asc", "-o", str(out), "-j", "0", "-q",
                                 "--save-embeddings", str(tmp_path / "e.npz")])
    assert result.exit_code == 0, result.output
    assert "1 of 3 images" in result.stderr
    rows = _rows(out)
    assert "label" not in rows[0] and len(rows) == 2
    quality = [float(r["quality"]) for r in rows]
    assert quality == sorted(quality) and quality == pytest.approx([float(r["norm"]) for r in rows], rel=1e-4)
    # norm method: the checkpoint's calibration was made for the head, so the MagFace default applies.
    low, high = DEFAULT_CALIBRATION["norm"].low, DEFAULT_CALIBRATION["norm"].high
    assert [float(r["quality_100"]) for r in rows] == pytest.approx(
        [100 * min(max((q - low) / (high - low), 0), 1) for q in quality], abs=0.01)
    saved = np.load(tmp_path / "e.npz")
    assert list(saved["names"]) == [r["path"] for r in rows]


def test_score_mxnet_rec(tiny_weights: Path, mxnet_made: Path) -> None:
    model = load_model(tiny_weights)
    dataset = open_dataset(mxnet_made / "train.rec", size=(112, 112))
    seen: list[int] = []
    result = score_dataset(model, dataset, batch_size=5, workers=0, on_progress=seen.append)
    assert len(result) == 18 and sum(seen) == 18 and not result.bad
    assert result.names[0] == "train:1" and result.labels is not None
    assert result.method == "head" and result.calibration.source == "test"
    assert ((result.quality_100 >= 0) & (result.quality_100 <= 100)).all()
    assert result.images_per_second > 0


def test_score_single_image(tiny_weights: Path, faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.csv"
    image = faces / "alice" / "1.jpg"
    result = runner.invoke(app, ["score", str(image), "-w", str(tiny_weights), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in _rows(out)] == ["1.jpg"]


def test_score_without_weights_is_one_line(monkeypatch: pytest.MonkeyPatch, faces: Path) -> None:
    monkeypatch.delenv("FQTOOL_WEIGHTS", raising=False)
    result = runner.invoke(app, ["score", str(faces)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and NO_WEIGHTS_MESSAGE.split(":")[0] in result.stderr


def test_head_method_needs_a_head(tmp_path: Path, faces: Path) -> None:
    weights = save_checkpoint(create_model("iresnet_tiny"), tmp_path / "nohead.safetensors")
    result = runner.invoke(app, ["score", str(faces), "-w", str(weights), "--method", "head", "-q"])
    assert result.exit_code == 2 and "quality head" in result.stderr


def test_defaults_and_calibration_helpers(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "data" / "faces").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # the default CSV goes into the current folder, not beside INPUT
    assert default_output(tmp_path / "data" / "faces") == Path.cwd() / "faces_quality.csv"
    assert default_output(tmp_path / "data" / "train.rec") == Path.cwd() / "train_quality.csv"
    cal = fit_calibration(np.linspace(0, 100, 101), 1, 99)
    assert (cal.low, cal.high) == pytest.approx((1.0, 99.0))


def test_score_with_onnx_model_matches_torch(tiny_weights: Path, mxnet_made: Path, tmp_path: Path) -> None:
    from fqtool.export.onnx import export_onnx

    model = load_model(tiny_weights)
    export_onnx(model, tmp_path / "tiny.onnx", check=False)
    onnx_model = load_model(tmp_path / "tiny.onnx")
    dataset = open_dataset(mxnet_made, size=(112, 112))
    want = score_dataset(model, dataset, batch_size=8, workers=0)
    got = score_dataset(onnx_model, dataset, batch_size=8, workers=0)
    assert got.names == want.names and got.method == "head"
    np.testing.assert_allclose(got.quality, want.quality, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(got.norms, want.norms, rtol=1e-3)


def test_score_rec_with_a_corrupt_record(tiny_weights: Path, faces: Path, tmp_path: Path) -> None:
    from fqtool.data.recordio import RecordIOWriter, pack_record

    jpeg = (faces / "alice" / "0.jpg").read_bytes()
    with RecordIOWriter(tmp_path / "im2rec.rec") as writer:  # im2rec layout: keys from 0, scalar labels
        writer.write(0, pack_record(0, jpeg))
        writer.write(1, pack_record(1, b"\xff\xd8\xff garbage"))
        writer.write(2, pack_record(1, jpeg))
    out = tmp_path / "rec.csv"
    rec = tmp_path / "im2rec.rec"
    args = ["score", str(rec), "-w", str(tiny_weights), "-o", str(out), "-q", "-j", "1", "-b", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 of 3 images" in result.stderr and "im2rec:1" in result.stderr
    rows = _rows(out)
    assert [(r["path"], r["label"]) for r in rows] == [("im2rec:0", "0"), ("im2rec:2", "1")]
    assert rows[0]["quality"] == rows[1]["quality"]
