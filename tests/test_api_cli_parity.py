"""The CLI and the Python API give identical numbers on the same inputs: ``score --align``, ``verify`` on a
``.bin`` and on an IJB set, ``erc-curve`` with two quality methods (issue 23: the CLI calls the API)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import fqtool
from _ijb_fixture import write_ijb_release
from _photos import Placement, make_photo
from fqtool.cli.app import app
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint

FACES = Path(__file__).parent / "data" / "faces"
runner = CliRunner()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with a quality head, three photos, a pairs.bin and an IJB_release with IJBC."""
    from fqtool.data.binfile import save_bin

    root = tmp_path_factory.mktemp("parity")
    torch.manual_seed(0)
    save_checkpoint(create_model("iresnet_tiny", quality_head=True).eval(), root / "model.safetensors")
    (root / "photos").mkdir()
    for i, face in enumerate((6, 9, 10)):
        photo, _ = make_photo([Placement(face, 90, 40, 1.0, 10 * i)], size=(240, 320), seed=i)
        Image.fromarray(photo).save(root / "photos" / f"{i}.jpg", quality=95)
    faces = [f.read_bytes() for f in sorted(FACES.glob("*.jpg"))[:8]]
    save_bin(root / "pairs.bin", faces + faces[::-1], [True, False, True, False, False, True, False, True])
    write_ijb_release(root / "IJB_release", "IJBC", templates_per_id=2, impostors=40, seed=0)
    return root


@pytest.fixture(scope="module")
def model(work: Path):
    return fqtool.load_model(work / "model.safetensors", device="cpu")


def _cli(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _same(api_dict: dict) -> dict:
    """The API's dict as the CLI's JSON reads back (tuples → lists, floats exact)."""
    return json.loads(json.dumps(api_dict))


def test_score_align_cli_equals_api(work: Path, model) -> None:
    out = work / "aligned.csv"
    _cli(["score", str(work / "photos"), "--align", "-w", str(work / "model.safetensors"), "-o", str(out),
          "--device", "cpu", "-j", "0", "-q"])
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    api = model.score(work / "photos", align=True)
    assert [r["path"] for r in rows] == api.names and len(api) == 3
    from fqtool.eval.scoring import write_csv

    write_csv(api, work / "api.csv")  # what the command writes, from the API's result: byte for byte
    assert (work / "api.csv").read_bytes() == out.read_bytes()
    assert len({r["quality"] for r in rows}) == 3  # three different faces, three different scores


def test_verify_bin_and_ijb_cli_equals_api(work: Path, model) -> None:
    weights = ["-w", str(work / "model.safetensors"), "--device", "cpu", "-q", "--json"]
    cli_bin = json.loads(_cli(["verify", str(work / "pairs.bin"), "--folds", "2", *weights]))
    api_bin = fqtool.verify(model, work / "pairs.bin", folds=2)
    assert cli_bin == _same(api_bin.to_dict()) and api_bin.accuracy == cli_bin["results"][0]["accuracy"]
    release = work / "IJB_release"
    protocols = ["--protocol", "insightface", "--protocol", "quality"]
    cli_ijb = json.loads(_cli(["verify", "IJBC", "--data-dir", str(release), *protocols, *weights]))
    api_ijb = fqtool.verify(model, "IJBC", data_dir=release, protocols=["insightface", "quality"])
    assert cli_ijb == _same(api_ijb.to_dict())
    assert [r["protocol"] for r in cli_ijb["results"]] == ["insightface", "quality"]


def test_erc_curve_two_methods_cli_equals_api(work: Path, model, tmp_path: Path) -> None:
    args = ["erc-curve", str(work / "pairs.bin"), "-w", str(work / "model.safetensors"), "--device", "cpu",
            "-q", "--json", "--method", "norm", "--method", "head", "-o", str(tmp_path / "cli")]
    cli = json.loads(_cli(args))
    api = fqtool.erc_curve(model, work / "pairs.bin", methods=["norm", "head"])
    assert cli == _same(api.to_dict())
    methods = {row["method"] for row in cli["summary"]}
    assert {"model:norm", "model:head"} <= methods
    written = api.write(tmp_path / "api")
    for path in written:  # the files the command writes, byte for byte (plots aside: they carry dates)
        if path.suffix in (".csv", ".json"):
            assert path.read_bytes() == (tmp_path / "cli" / path.name).read_bytes()
