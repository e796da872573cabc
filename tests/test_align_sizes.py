"""Crops for other model conventions (issue 24 item 5): ``align --size`` at any side, ``--margin`` loose
crops, and ``score --align`` aligning straight to the model's own input size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fqtool.align.pipeline import crop_size_for
from fqtool.cli.app import app
from fqtool.data.warp import TEMPLATE_112, loose_box, loose_crop, norm_crop, template
from fqtool.errors import FqtoolError
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint

runner = CliRunner()
SHIFT = (23, 17)  # (x, y) of the 160 template inside the photo


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (220, 240, 3), dtype=np.uint8)
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(image).save(folder / "p.png")
    return folder, image


def _points() -> np.ndarray:
    return template(160).astype(np.float64) + np.array(SHIFT, dtype=np.float64)


def test_a_160_crop_is_the_scaled_template_warp(photo) -> None:
    _, image = photo
    np.testing.assert_allclose(template(160), TEMPLATE_112 * 160 / 112, rtol=1e-6)
    crop = norm_crop(image, _points(), 160)  # the landmarks sit on the 160 template, shifted: a pure shift
    x, y = SHIFT
    np.testing.assert_array_equal(crop, image[y : y + 160, x : x + 160])


def test_loose_crop_is_box_plus_margin_like_facenet(photo) -> None:
    _, image = photo
    box = np.array([30.7, 20.2, 130.9, 140.5])
    assert loose_box(box, 20, image.shape) == (20, 10, 140, 150)  # ±10 px, cut to whole pixels
    reference = np.asarray(Image.fromarray(image[10:150, 20:140]).resize((160, 160), Image.BILINEAR))
    np.testing.assert_array_equal(loose_crop(image, box, 20, 160), reference)
    assert loose_box(np.array([-5.0, 200.0, 90.0, 300.0]), 10, image.shape) == (0, 195, 95, 220)  # clipped
    exact = loose_crop(image, np.array([50.0, 40.0, 150.0, 140.0]), 0, 100)  # no resize: the pixels
    np.testing.assert_array_equal(exact, image[40:140, 50:150])


def test_align_cli_size_160_and_margin(photo, tmp_path: Path) -> None:
    folder, image = photo
    points = _points()
    lmk = tmp_path / "lmk.txt"
    lmk.write_text("p.png " + " ".join(f"{v:.4f}" for v in points.ravel()) + "\n")
    out = tmp_path / "aligned"
    result = runner.invoke(
        app, ["align", str(folder), str(out), "-q", "--size", "160", "--landmarks", str(lmk)]
    )
    assert result.exit_code == 0, result.output
    crop = np.asarray(Image.open(out / "p.png"))
    np.testing.assert_array_equal(crop, norm_crop(image, points, 160))
    loose = tmp_path / "loose"
    result = runner.invoke(
        app,
        ["align", str(folder), str(loose), "-q", "--size", "160", "--margin", "32", "--landmarks", str(lmk)],
    )
    assert result.exit_code == 0, result.output
    box = np.concatenate([points.min(axis=0), points.max(axis=0)])  # a landmarks file's box: the points'
    np.testing.assert_array_equal(np.asarray(Image.open(loose / "p.png")), loose_crop(image, box, 32, 160))
    result = runner.invoke(app, ["align", str(folder), str(tmp_path / "x"), "--margin", "-3"])
    assert result.exit_code == 2


@pytest.fixture(scope="module")
def weights_160(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("iresnet_tiny", input_size=160).eval()
    model.info.preprocess = dataclasses.replace(model.info.preprocess, size=(160, 160))
    return save_checkpoint(model, tmp_path_factory.mktemp("m160") / "m160.safetensors")


def test_the_resize_warning_tells_crops_for_another_model_from_photos(
    weights_160: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    for name, shape in (("crops", (112, 112, 3)), ("photos", (300, 400, 3))):
        folder = tmp_path / name
        folder.mkdir()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / "a.png")
        result = runner.invoke(
            app,
            [
                "score",
                str(folder),
                "-w",
                str(weights_160),
                "--device",
                "cpu",
                "--workers",
                "0",
                "-q",
                "-o",
                str(tmp_path / f"{name}.csv"),
            ],
        )
        assert result.exit_code == 0, result.output
        crops = "look like aligned crops for another model" in result.stderr
        photos = "resized without face alignment" in result.stderr
        assert (crops, photos) == ((True, False) if name == "crops" else (False, True))
        assert "fqtool align --size 160" in result.stderr or name == "photos"


def test_score_align_aligns_once_at_the_model_size(photo, weights_160: Path, monkeypatch) -> None:
    assert crop_size_for((160, 160)) == 160 and crop_size_for((112, 96)) == 112
    weights = weights_160
    seen = []

    def fake_aligned_dataset(input_path, workdir, size=112, **kwargs):
        seen.append((size, kwargs.get("margin")))
        raise FqtoolError("stopped after the crop size was chosen")

    monkeypatch.setattr("fqtool.align.datasets.aligned_dataset", fake_aligned_dataset)
    folder, _ = photo
    args = ["score", str(folder), "-w", str(weights), "--align", "--device", "cpu", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "stopped after" in result.stderr
    result = runner.invoke(app, [*args, "--preprocess", "facenet"])  # FaceNet's convention: loose crops
    assert result.exit_code == 2 and "stopped after" in result.stderr
    assert seen == [(160, None), (160, 32.0)]
