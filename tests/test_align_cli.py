"""``fqtool align`` end to end, bad inputs and ``--landmarks`` files, resuming, ``score/verify --align``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _photos import Placement, correlation, load_face, make_photo
from fqtool.align import pipeline
from fqtool.align.pipeline import AlignOptions, align_input
from fqtool.cli.app import app
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint

runner = CliRunner()
ADAM, DOMINIQUE, ELIJAH, CELINE = 6, 9, 10, 19
SIZE = (240, 320)


def _save(photo: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo).save(path, **kwargs)
    return path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Identity folders of photos, plus a non-image, a broken JPEG, a face-less photo, a 1×1 image,
    a CMYK JPEG and a photo stored sideways with an EXIF orientation tag."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    for person, face in (("adam", ADAM), ("dominique", DOMINIQUE)):
        for i, (scale, angle) in enumerate([(1.0, 0), (0.8, 20)]):
            photo, _ = make_photo([Placement(face, 90, 40, scale, angle)], size=SIZE, seed=i)
            _save(photo, root / person / f"{i}.jpg", quality=95)
    (root / "notes.txt").write_text("not an image")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _save(make_photo([], size=SIZE, seed=9)[0], root / "empty.png")
    _save(np.zeros((1, 1, 3), np.uint8), root / "dot.png")
    cmyk, _ = make_photo([Placement(ELIJAH, 100, 50, 1.0, 0)], size=SIZE, seed=3)
    Image.fromarray(cmyk).convert("CMYK").save(root / "cmyk.jpg", quality=95)
    upright, _ = make_photo([Placement(CELINE, 100, 50, 1.0, 0)], size=SIZE, seed=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(root / "sideways.jpg", exif=exif,
                                                                       quality=95)
    return root


@pytest.fixture(scope="module")
def aligned(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("aligned") / "aligned"
    result = runner.invoke(app, ["align", str(photos), str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "aligned 6 faces from 9 images" in result.stdout
    assert "broken.jpg" in result.stderr
    return out


def test_align_folder_writes_crops_csv_and_lists(aligned: Path) -> None:
    rows = _rows(aligned / "faces.csv")
    assert list(rows[0]) == pipeline.CSV_COLUMNS
    assert [r["source"] for r in rows] == ["adam/0.jpg", "adam/1.jpg", "cmyk.jpg", "dominique/0.jpg",
                                           "dominique/1.jpg", "sideways.jpg"]
    assert [r["out"] for r in rows][:2] == ["adam/0.png", "adam/1.png"]
    for row in rows:
        with Image.open(aligned / row["out"]) as crop:
            assert crop.size == (112, 112) and crop.mode == "RGB" and crop.format == "PNG"
    assert (aligned / "no_face.txt").read_text().split() == ["dot.png", "empty.png"]
    assert (aligned / "unreadable.txt").read_text().startswith("broken.jpg\t")
    assert not (aligned / pipeline.JOURNAL).exists()


@pytest.mark.parametrize(("name", "face"), [("cmyk", ELIJAH), ("sideways", CELINE), ("adam/0", ADAM)])
def test_cmyk_and_exif_rotated_photos_are_aligned_upright(aligned: Path, name: str, face: int) -> None:
    crop = np.asarray(Image.open(aligned / f"{name}.png"))
    assert correlation(crop, load_face(face)) >= 0.9


@pytest.mark.slow
def test_crops_are_accepted_by_score(aligned: Path, tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.csv"
    result = runner.invoke(app, ["score", str(aligned / "adam"), "-w", str(tiny_weights), "-o", str(out),
                                 "-j", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert "without face alignment" not in result.stderr
    assert len(_rows(out)) == 2


# ------------------------------------------------------------------------------------------ policies


def test_face_policies_min_size_and_jpg(tmp_path: Path) -> None:
    photo, _ = make_photo([Placement(ADAM, 20, 30, 0.8, 0), Placement(DOMINIQUE, 170, 20, 1.2, 0)],
                          size=SIZE, seed=1)
    source = _save(photo, tmp_path / "two.png")
    every = align_input(source, tmp_path / "all", AlignOptions(faces="all", fmt="jpg"))
    assert [f.out for f in every.faces] == ["two_0.jpg", "two_1.jpg"]
    largest = align_input(source, tmp_path / "largest", AlignOptions())
    assert len(largest.faces) == 1
    assert correlation(np.asarray(Image.open(tmp_path / "largest" / "two.png")), load_face(DOMINIQUE)) >= 0.9
    big_only = align_input(source, tmp_path / "none", AlignOptions(min_size=400))
    assert big_only.faces == [] and big_only.no_face == ["two.png"]


def test_list_file_and_single_image_inputs(photos: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"{photos / 'adam' / '0.jpg'} 0\n{photos / 'cmyk.jpg'} 1\n")
    result = runner.invoke(app, ["align", str(listing), str(tmp_path / "out"), "-q", "--no-refine"])
    assert result.exit_code == 0, result.output
    assert len(_rows(tmp_path / "out" / "faces.csv")) == 2
    result = runner.invoke(app, ["align", str(photos / "cmyk.jpg"), str(tmp_path / "one"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "one" / "cmyk.png").is_file()


# ----------------------------------------------------------------------------------------- landmarks


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """Two photos and their true landmarks."""
    root = tmp_path_factory.mktemp("known")
    truths = []
    for i, (face, angle) in enumerate([(ADAM, 25), (ELIJAH, -10)]):
        photo, (truth,) = make_photo([Placement(face, 60, 30, 1.3, angle)], size=SIZE, seed=i)
        _save(photo, root / "in" / f"p{i}.png")
        truths.append(truth)
    return root, truths


def test_insightface_landmarks_file_gives_exact_crops(known, tmp_path: Path) -> None:
    root, truths = known
    lines = [f"p{i}.png " + " ".join(f"{v:.3f}" for v in t.ravel()) + " 0.99\n" for i, t in enumerate(truths)]
    (tmp_path / "lmk.txt").write_text("".join(lines))
    result = runner.invoke(app, ["align", str(root / "in"), str(tmp_path / "out"), "-q",
                                 "--landmarks", str(tmp_path / "lmk.txt")])
    assert result.exit_code == 0, result.output
    for i, face in enumerate((ADAM, ELIJAH)):
        crop = np.asarray(Image.open(tmp_path / "out" / f"p{i}.png"))
        assert correlation(crop, load_face(face)) >= 0.97
    # faces.csv is itself a landmarks file: the same crops again
    again = runner.invoke(app, ["align", str(root / "in"), str(tmp_path / "again"), "-q",
                                "--landmarks", str(tmp_path / "out" / "faces.csv")])
    assert again.exit_code == 0, again.output
    for i in range(2):
        first = np.asarray(Image.open(tmp_path / "out" / f"p{i}.png")).astype(int)
        second = np.asarray(Image.open(tmp_path / "again" / f"p{i}.png")).astype(int)
        assert np.abs(first - second).mean() < 0.5  # the CSV keeps two decimals


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("p0.png 1 2 3 4 5 6 7 8 9",
         "line 2: expected 'name x1 y1 … x5 y5 [score]' (11 or 12 columns), found 10"),
        ("p0.png 1 2 3 4 5 nan 7 8 9 10", "line 2: landmarks and score must be finite numbers"),
        ("p0.png 1 2 3 4 5 six 7 8 9 10", "line 2: landmarks and score must be numbers"),
        ("nobody.png 1 2 3 4 5 6 7 8 9 10", "line 2: 'nobody.png' is not an image in the input"),
    ],
)
def test_bad_landmark_lines_name_file_and_line(known, tmp_path: Path, line: str, message: str) -> None:
    root, _ = known
    path = tmp_path / "bad.txt"
    path.write_text("p1.png 1 2 3 4 5 6 7 8 9 10\n" + line + "\n")
    result = runner.invoke(app, ["align", str(root / "in"), str(tmp_path / "out"), "--landmarks", str(path)])
    assert result.exit_code == 2
    assert f"{path}: {message}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out" / "faces.csv").exists()


def test_bad_csv_landmarks_and_bad_options(known, tmp_path: Path) -> None:
    root, _ = known
    path = tmp_path / "bad.csv"
    header = ",".join(pipeline.CSV_COLUMNS)
    path.write_text(header + "\np0.png,0,p0.png,0.9,1,2,3\n")
    result = runner.invoke(app, ["align", str(root / "in"), str(tmp_path / "o"), "--landmarks", str(path)])
    assert result.exit_code == 2 and f"{path}: line 2: 7 columns, the header has 18" in result.stderr
    result = runner.invoke(app, ["align", str(root / "in"), str(tmp_path / "o"), "--size", "8"])
    assert result.exit_code == 2 and "--size 8" in result.stderr
    result = runner.invoke(app, ["align", str(root / "in"), str(tmp_path / "o"), "--upscale", "8"])
    assert result.exit_code == 2 and "--upscale must be between 1 and 4, not 8.0" in result.stderr
    result = runner.invoke(app, ["align", str(root / "in"), str(tmp_path / "o"), "--landmarks", str(path),
                                 "--upscale", "2"])
    assert result.exit_code == 2 and "with --landmarks nothing is detected" in result.stderr
    (tmp_path / "train.rec").write_bytes(b"")
    result = runner.invoke(app, ["align", str(tmp_path / "train.rec"), str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a .rec file" in result.stderr


# -------------------------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_and_keeps_finished_crops(known, tmp_path: Path, monkeypatch) -> None:
    root, truths = known
    lmk = tmp_path / "lmk.txt"
    lmk.write_text("".join(f"p{i}.png " + " ".join(map(str, t.ravel())) + "\n" for i, t in enumerate(truths)))
    options = AlignOptions(landmarks=str(lmk))
    real = pipeline._process
    calls = []

    def stop_on_second(aligner, root_, output, source, stem):
        calls.append(source)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(aligner, root_, output, source, stem)

    monkeypatch.setattr(pipeline, "_process", stop_on_second)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        align_input(root / "in", out, options)
    assert (out / "p0.png").is_file() and not (out / "faces.csv").exists()
    first_crop = (out / "p0.png").stat().st_mtime_ns
    monkeypatch.setattr(pipeline, "_process", real)
    result = align_input(root / "in", out, options)
    assert result.resumed == 1 and [f.source for f in result.faces] == ["p0.png", "p1.png"]
    assert (out / "p0.png").stat().st_mtime_ns == first_crop
    assert len(_rows(out / "faces.csv")) == 2 and not (out / pipeline.JOURNAL).exists()


# --------------------------------------------------------------------------------- score / verify --align


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(create_model("iresnet_tiny"), tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.mark.slow
def test_score_align_on_photos_and_warning_without_it(photos: Path, tiny_weights: Path,
                                                      tmp_path: Path) -> None:
    plain = runner.invoke(app, ["score", str(photos / "adam"), "-w", str(tiny_weights), "-o",
                                str(tmp_path / "plain.csv"), "-j", "0", "-q"])
    assert plain.exit_code == 0, plain.output
    assert plain.stderr.count("320×240, not the model's 112×112") == 1 and "--align" in plain.stderr
    out = tmp_path / "aligned.csv"
    result = runner.invoke(app, ["score", str(photos), "--align", "-w", str(tiny_weights), "-o", str(out),
                                 "-j", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in _rows(out)] == ["adam/0.jpg", "adam/1.jpg", "cmyk.jpg", "dominique/0.jpg",
                                               "dominique/1.jpg", "sideways.jpg"]
    assert "no face found in 3 of 9 images" in result.stderr
    assert "without face alignment" not in result.stderr


@pytest.mark.slow
def test_verify_align_on_a_pairs_folder(photos: Path, tiny_weights: Path, tmp_path: Path) -> None:
    from fqtool.data.binfile import VerificationSet, write_verification_folder

    names = ["adam/0.jpg", "adam/1.jpg", "adam/0.jpg", "dominique/0.jpg", "dominique/0.jpg", "empty.png"]
    images = [(photos / n).read_bytes() for n in names]
    folder = write_verification_folder(VerificationSet("mine", images, np.array([True, False, False])),
                                       tmp_path / "mine")
    feats = tmp_path / "f.npz"
    result = runner.invoke(app, ["verify", str(folder), "--align", "-w", str(tiny_weights), "--folds", "2",
                                 "--no-flip", "-q", "--json", "--save-features", str(feats)])
    assert result.exit_code == 0, result.output
    assert "no face found in 1 of 6 images" in result.stderr
    embeddings = np.load(feats)["embeddings"]
    plain = runner.invoke(app, ["verify", str(folder), "-w", str(tiny_weights), "--folds", "2", "--no-flip",
                                "-q", "--json", "--save-features", str(tmp_path / "p.npz")])
    assert plain.exit_code == 0, plain.output
    # the aligned embeddings differ from the squashed-photo ones except for the face-less image
    differs = np.abs(embeddings - np.load(tmp_path / "p.npz")["embeddings"]).max(axis=1) > 1e-4
    assert differs[:5].all() and not differs[5]


def test_crop_names_stay_inside_the_output_and_do_not_collide() -> None:
    names = pipeline.out_names(["../up/a.jpg", "/abs/b.png", "c.jpg", "c.png", "d/./e.webp"], "png")
    assert names == {"../up/a.jpg": "_/up/a", "/abs/b.png": "abs/b", "c.jpg": "c_jpg", "c.png": "c_png",
                     "d/./e.webp": "d/e"}
