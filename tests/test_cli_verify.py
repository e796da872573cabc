"""``fqtool verify`` and ``fqtool erc-curve`` end to end on a tiny .bin and a random iresnet_tiny."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.data.binfile import save_bin
from fqtool.eval.features import load_features
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint

runner = CliRunner()
PAIRS = 12


def _jpeg(rng: np.random.Generator, base: np.ndarray) -> bytes:
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _images(rng: np.random.Generator, same: list[bool]) -> list[bytes]:
    bases = rng.uniform(40, 220, size=(len(same) * 2, 1, 1, 3)) * np.ones((1, 112, 112, 1))
    out = []
    for i, s in enumerate(same):
        out += [_jpeg(rng, bases[2 * i]), _jpeg(rng, bases[2 * i] if s else bases[2 * i + 1])]
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    rng = np.random.default_rng(0)
    same = [i % 2 == 0 for i in range(PAIRS)]
    images = _images(rng, same)
    save_bin(root / "tiny.bin", images, same)
    (root / "odd.bin").write_bytes(pickle.dumps((images[:-1], same), protocol=4))
    (root / "mismatch.bin").write_bytes(pickle.dumps((images, same[:-1]), protocol=4))
    torch.manual_seed(0)
    save_checkpoint(create_model("iresnet_tiny"), root / "tiny.safetensors")
    rows = "".join(f"{i},{rng.random():.6f}\n" for i in range(2 * PAIRS))
    (root / "q.csv").write_text("index,quality\n" + rows)
    (root / "short.csv").write_text("index,quality\n" + "".join(rows.splitlines(True)[:-3]))
    return root


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _fails(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def verified(workdir: Path) -> tuple[Path, dict]:
    """``verify --json --save-features`` once: (features path, the JSON result)."""
    feats = workdir / "tiny.npz"
    args = ["verify", str(workdir / "tiny.bin"), "-w", str(workdir / "tiny.safetensors"), "--device", "cpu"]
    out = _ok([*args, "-q", "--json", "--save-features", str(feats)])
    return feats, json.loads(out)["results"][0]


def test_verify_json_saves_features_and_features_reproduce(verified: tuple[Path, dict]) -> None:
    feats, res = verified
    assert res["name"] == "tiny" and res["num_pairs"] == PAIRS and res["flip"] is True
    assert 0.0 <= res["accuracy"] <= 1.0 and res["xnorm"] > 0
    assert res["tar_at_far"] == {"1e-03": None, "1e-04": None}
    fs = load_features(feats)
    assert (
        fs.embeddings.shape == (2 * PAIRS, 128) and fs.has_flip and fs.meta["weights"] == "tiny.safetensors"
    )
    again = json.loads(_ok(["verify", "--features", str(feats), "--json"]))["results"][0]
    assert again["accuracy"] == res["accuracy"] and again["xnorm"] == pytest.approx(res["xnorm"], rel=1e-6)
    magface = json.loads(_ok(["verify", "--features", str(feats), "--json", "--protocol", "magface"]))
    assert magface["results"][0]["flip"] is False and magface["results"][0]["protocol"] == "magface"


def test_verify_by_name_with_table_csv_and_plot(workdir: Path, tmp_path: Path) -> None:
    out = _ok(
        [
            "verify",
            "tiny",
            "--data-dir",
            str(workdir),
            "-w",
            str(workdir / "tiny.safetensors"),
            "--device",
            "cpu",
            "-q",
            "--no-flip",
            "--csv",
            str(tmp_path / "r.csv"),
            "--plot",
            str(tmp_path / "roc.png"),
        ]
    )
    assert "tiny" in out and "±" in out and "XNorm" in out
    assert (tmp_path / "r.csv").read_text().startswith("target,protocol,flip,pairs,accuracy")
    assert (tmp_path / "roc.png").stat().st_size > 0 and (tmp_path / "roc.svg").stat().st_size > 0


@pytest.mark.parametrize("mode", ["erc", "edc"])
def test_erc_curve_from_features_with_scores(
    workdir: Path, verified: tuple[Path, dict], tmp_path: Path, mode: str
) -> None:
    feats = verified[0]
    out_dir = tmp_path / "out"
    out = _ok(
        [
            "erc-curve",
            "--features",
            str(feats),
            "--scores",
            f"rand={workdir / 'q.csv'}",
            "--mode",
            mode,
            "--fmr",
            "1e-1",
            "--output",
            str(out_dir),
            "--json",
        ]
    )
    summary = json.loads(out)["summary"]
    assert {r["method"] for r in summary} == {"model:norm", "rand", "ideal", "random"}
    for name in ("curves.csv", "summary.csv", "summary.json", f"{mode}.png", f"{mode}.svg"):
        assert (out_dir / name).stat().st_size > 0
    header = (out_dir / "curves.csv").read_text().splitlines()[0]
    assert header == "method,mode,operating_point,fraction,fnmr,threshold,genuine,impostor"


def test_erc_curve_from_model(workdir: Path, tmp_path: Path) -> None:
    out = _ok(
        [
            "erc-curve",
            str(workdir / "tiny.bin"),
            "-w",
            str(workdir / "tiny.safetensors"),
            "--device",
            "cpu",
            "-q",
            "--mode",
            "edc",
            "-o",
            str(tmp_path / "e"),
        ]
    )
    assert "EDC" in out and "model:norm" in out
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["mode"] == "edc"


def test_bad_inputs_exit_2_with_one_line(workdir: Path, verified: tuple[Path, dict]) -> None:
    weights = ["-w", str(workdir / "tiny.safetensors"), "--device", "cpu", "-q"]
    assert "odd number of images" in _fails(["verify", str(workdir / "odd.bin"), *weights])
    assert "issame has 11 entries" in _fails(["verify", str(workdir / "mismatch.bin"), *weights])
    assert "not found" in _fails(["verify", "nosuchset", "--data-dir", str(workdir), *weights])
    err = _fails(
        ["erc-curve", "--features", str(workdir / "tiny.npz"), "--scores", f"s={workdir / 'short.csv'}"]
    )
    assert "short.csv" in err and "3 of 24 images have no quality" in err
    assert "protocol" in _fails(["verify", "--features", str(workdir / "tiny.npz"), "--protocol", "x"])
    assert "not both" in _fails(["verify", "tiny", "--features", str(workdir / "tiny.npz")])


def test_folder_target_env_data_dir_and_path_scores(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fqtool.data.binfile import load_bin, write_verification_folder

    write_verification_folder(load_bin(workdir / "tiny.bin"), tmp_path / "tinyfolder")
    monkeypatch.setenv("FQTOOL_DATA", str(tmp_path))
    feats = tmp_path / "folder.npz"
    args = [
        "verify",
        "tinyfolder",
        "-w",
        str(workdir / "tiny.safetensors"),
        "--device",
        "cpu",
        "-q",
        "--json",
    ]
    res = json.loads(_ok([*args, "--no-flip", "--save-features", str(feats)]))["results"][0]
    assert res["name"] == "tinyfolder" and res["num_pairs"] == PAIRS
    scores = tmp_path / "by_path.csv"
    scores.write_text("path,quality\n" + "".join(f"images/{i:06d}.jpg,{i}\n" for i in range(2 * PAIRS)))
    out = _ok(
        [
            "erc-curve",
            "--features",
            str(feats),
            "--scores",
            f"p={scores}",
            "--no-model-quality",
            "-o",
            str(tmp_path / "o"),
            "--json",
        ]
    )
    assert {r["method"] for r in json.loads(out)["summary"]} == {"p", "ideal", "random"}
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "junk.npz" in _fails(["verify", "--features", str(tmp_path / "junk.npz")])
