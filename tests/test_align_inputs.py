"""``align`` inputs that used to give silent wrong results: resuming another input's journal, colliding
crop names, 16-bit photos, special files in the folder (issue 25 items 3, 4, 5, 10)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _photos import Placement, correlation, load_face, make_photo
from fqtool.align import pipeline
from fqtool.align.pipeline import AlignOptions, align_input

ADAM, ELIJAH = 6, 10
SIZE = (240, 320)


def _photo(face: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    photo, (truth,) = make_photo([Placement(face, 60, 30, 1.3, 10)], size=SIZE, seed=seed)
    return photo, truth


def _landmarks(path: Path, rows: dict[str, np.ndarray]) -> Path:
    path.write_text(
        "".join(f"{n} " + " ".join(f"{v:.3f}" for v in t.ravel()) + "\n" for n, t in rows.items())
    )
    return path


def _interrupt_after_first(monkeypatch) -> None:
    real = pipeline._process
    calls = []

    def stop_on_second(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(pipeline, "_process", stop_on_second)


def test_resume_redoes_images_of_another_input_or_replaced_in_place(tmp_path: Path, monkeypatch) -> None:
    adam, truth = _photo(ADAM, 0)
    elijah, _ = _photo(ELIJAH, 0)  # same placement: the same landmarks fit both
    for folder, photo in (("setA", adam), ("setB", elijah)):
        (tmp_path / folder).mkdir()
        for name in ("p0.png", "p1.png"):
            Image.fromarray(photo).save(tmp_path / folder / name)
    options = AlignOptions(
        landmarks=str(_landmarks(tmp_path / "lmk.txt", {"p0.png": truth, "p1.png": truth}))
    )
    out = tmp_path / "out"
    _interrupt_after_first(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        align_input(tmp_path / "setA", out, options)
    monkeypatch.undo()
    result = align_input(tmp_path / "setB", out, options)  # same names, other photos
    assert result.resumed == 0
    crop = np.asarray(Image.open(out / "p0.png"))
    assert correlation(crop, load_face(ELIJAH)) > correlation(crop, load_face(ADAM))
    # a photo replaced in place (same name, other content) is redone too
    _interrupt_after_first(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        align_input(tmp_path / "setB", out / "again", options)
    monkeypatch.undo()
    Image.fromarray(adam).save(tmp_path / "setB" / "p0.png")
    result = align_input(tmp_path / "setB", out / "again", options)
    assert result.resumed == 0
    crop = np.asarray(Image.open(out / "again" / "p0.png"))
    assert correlation(crop, load_face(ADAM)) > correlation(crop, load_face(ELIJAH))
    # the same unchanged input still resumes
    _interrupt_after_first(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        align_input(tmp_path / "setA", out / "third", options)
    monkeypatch.undo()
    assert align_input(tmp_path / "setA", out / "third", options).resumed == 1


def test_crop_names_are_unique_also_where_case_does_not_count() -> None:
    sources = ["a.jpg", "a.png", "a_jpg.png", "A.jpg", "A.JPG", "d/x.jpg", "D/x.jpg", "a_jpg~2.png"]
    names = pipeline.out_names(sources, "png")
    assert len({n.casefold() for n in names.values()}) == len(sources)
    assert names["a.png"] == "a_png" and names["d/x.jpg"].startswith("d/x")
    for policy in ("largest", "all"):
        crops = [pipeline._crop_name(names[s], k, policy, "png") for s in sources for k in range(12)]
        assert len({c.casefold() for c in crops}) == len(crops) or policy == "largest"


def test_colliding_sources_get_their_own_crops_and_rows(tmp_path: Path) -> None:
    photo, truth = _photo(ADAM, 1)
    names = ["a.jpg", "a.png", "a_jpg.png", "A.JPG"]
    for i, name in enumerate(names):
        Image.fromarray(np.roll(photo, 3 * i, axis=2) if i else photo).save(tmp_path / name, quality=95)
    out = tmp_path / "out"
    lmk = _landmarks(tmp_path / "lmk.txt", dict.fromkeys(names, truth))
    align_input(tmp_path, out, AlignOptions(landmarks=str(lmk)))
    with open(out / "faces.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["source"] for r in rows) == sorted(names)
    outs = [r["out"] for r in rows]
    assert len({o.casefold() for o in outs}) == 4 and all((out / o).is_file() for o in outs)


def test_16_bit_photos_align_like_their_8_bit_copy(tmp_path: Path) -> None:
    photo, truth = _photo(ADAM, 2)
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    (tmp_path / "in").mkdir()
    Image.fromarray(grey).save(tmp_path / "in" / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "in" / "g16.png")  # mode I;16
    lmk = _landmarks(tmp_path / "lmk.txt", {"g8.png": truth, "g16.png": truth})
    align_input(tmp_path / "in", tmp_path / "out", AlignOptions(landmarks=str(lmk)))
    eight = np.asarray(Image.open(tmp_path / "out" / "g8.png")).astype(int)
    sixteen = np.asarray(Image.open(tmp_path / "out" / "g16.png")).astype(int)
    assert sixteen.mean() < 250 and np.abs(eight - sixteen).max() <= 1


def test_one_decoder_reads_a_photo_the_same_with_and_without_align(tmp_path: Path) -> None:
    from fqtool.data.decode import decode_image

    photo, _ = _photo(ADAM, 3)
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("jpg", "png"):
        path = tmp_path / f"sideways.{fmt}"
        Image.fromarray(photo).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
        data = path.read_bytes()
        plain = decode_image(data).permute(1, 2, 0).numpy()
        assert plain.shape == photo.shape  # upright: EXIF applied without --align too
        assert np.array_equal(plain, pipeline.decode_rgb(data))
        assert np.abs(plain.astype(int) - photo).mean() < 4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (os.mkfifo)")
def test_a_fifo_named_like_an_image_is_skipped_not_read(tmp_path: Path) -> None:
    from fqtool.data.decode import read_image_file
    from fqtool.data.lists import scan_folder
    from fqtool.data.walk import walk_images
    from fqtool.errors import BadInputError

    photo, truth = _photo(ADAM, 4)
    (tmp_path / "in" / "id").mkdir(parents=True)
    Image.fromarray(photo).save(tmp_path / "in" / "id" / "a.png")
    os.mkfifo(tmp_path / "in" / "id" / "pipe.jpg")
    os.mkfifo(tmp_path / "in" / "pipe.jpg")
    skipped: list[str] = []
    assert walk_images(tmp_path / "in", skipped=skipped) == ["id/a.png"]
    assert sorted(skipped) == ["id/pipe.jpg", "pipe.jpg"]
    assert scan_folder(tmp_path / "in").paths == ["id/a.png"]
    with pytest.raises(BadInputError, match="not a regular file"):
        read_image_file(tmp_path / "in" / "pipe.jpg")  # returns at once instead of blocking
    with pytest.raises(BadInputError, match="not a regular file"):
        read_image_file("/dev/zero")
    lmk = _landmarks(tmp_path / "lmk.txt", {"id/a.png": truth})
    result = align_input(tmp_path / "in", tmp_path / "out", AlignOptions(landmarks=str(lmk)))
    assert [f.source for f in result.faces] == ["id/a.png"]


def test_align_refuses_pixel_bombs_before_decoding(tmp_path: Path) -> None:
    import io
    import resource

    (tmp_path / "in").mkdir()
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, "PNG")  # 81 MP, a few kB on disk
    (tmp_path / "in" / "bomb.png").write_bytes(buffer.getvalue())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(Exception, match="too large"):
        pipeline.read_rgb(tmp_path / "in" / "bomb.png")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kB: nothing decoded
