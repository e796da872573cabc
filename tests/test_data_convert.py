"""convert_rec: exact bytes, list formats, verification folders, resume after interruption, workers."""

from __future__ import annotations

import json
import os

import pytest

from fqtool.data import convert as convert_mod
from fqtool.data.binfile import load_bin, load_verification_folder
from fqtool.data.convert import convert_rec
from fqtool.data.lists import read_classes, read_list
from fqtool.data.recordio import MAGIC_BYTES, RecordIOReader, RecordIOWriter, pack_record, unpack_record
from fqtool.errors import BadInputError, OutputError


def _tree(folder):
    """Every file under ``folder`` (relative path → bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_mxnet_made(tmp_path, mxnet_made) -> None:
    manifest = json.loads((mxnet_made / "manifest.json").read_text())
    seen = []
    result = convert_rec(mxnet_made, tmp_path / "out", workers=1, on_progress=seen.append)
    assert (result.num_images, result.num_classes, result.written, result.skipped) == (18, 6, 18, 0)
    assert sum(seen) == 18 and sorted(result.verification) == ["lfw", "lfw_py2style"]
    entries = read_list(tmp_path / "out" / "train.txt")
    assert entries.labels.tolist() == [im["class"] for im in manifest["images"]]
    assert entries.paths[:2] == ["images/0/1.jpg", "images/0/2.jpg"]
    reader = RecordIOReader(mxnet_made / "train.rec")
    for path, im in zip(entries.paths, manifest["images"], strict=True):
        original = unpack_record(reader.read(im["index"]))[1]
        assert (tmp_path / "out" / path).read_bytes() == original  # no re-encoding
    assert read_classes(tmp_path / "out" / "classes.tsv") == {c: str(c) for c in range(6)}
    lfw = load_verification_folder(tmp_path / "out" / "verification" / "lfw")
    assert lfw.images == load_bin(mxnet_made / "lfw.bin").images
    assert lfw.issame.tolist() == manifest["verification"]["issame"]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(("fmt", "name", "line"), [
    ("lst", "train.lst", "0\t0.000000\timages/0/1.jpg"),
    ("semicolon", "train.txt", "images/0/1.jpg;0"),
])
def test_list_formats(tmp_path, mxnet_made, fmt, name, line) -> None:
    convert_rec(mxnet_made / "train.rec", tmp_path / "o", list_format=fmt, include_bins=False, limit=4)
    assert (tmp_path / "o" / name).read_text().splitlines()[0] == line
    assert len((tmp_path / "o" / name).read_text().splitlines()) == 4
    assert not (tmp_path / "o" / "verification").exists()


def test_resume_after_interruption(tmp_path, mxnet_made, monkeypatch) -> None:
    reference = tmp_path / "ref"
    convert_rec(mxnet_made, reference, workers=1)
    calls = {"n": 0}
    real_replace = os.replace

    def flaky_replace(src, dst):
        calls["n"] += 1
        if calls["n"] > 6:  # source.json, then 5 images
            raise KeyboardInterrupt
        return real_replace(src, dst)

    out = tmp_path / "out"
    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        convert_rec(mxnet_made, out, workers=1)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (out / "train.txt").exists()  # the list is written last
    finished = [p for p in (out / "images").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(finished) == 5
    for p in finished:  # whatever has its final name is complete
        assert p.read_bytes() == (reference / p.relative_to(out)).read_bytes()
    result = convert_rec(mxnet_made, out, workers=1)
    assert (result.written, result.skipped) == (13, 5)
    assert _tree(out) == _tree(reference)


@pytest.mark.parametrize("processes", [False, True])
def test_parallel_workers_match_serial(tmp_path, make_insightface_rec, monkeypatch, processes) -> None:
    src = make_insightface_rec(tmp_path / "src", classes=4, per_class=3)
    convert_rec(src, tmp_path / "serial", workers=1)
    monkeypatch.setattr(convert_mod, "_TASK_IMAGES", 2)
    result = convert_rec(src, tmp_path / "par", workers=2, use_processes=processes)
    assert result.written == 12
    assert _tree(tmp_path / "par") == _tree(tmp_path / "serial")


def test_im2rec_rec_and_split_records(tmp_path, make_image) -> None:
    """No header record (every record is an image); an image holding the magic word at an aligned
    offset is split by the writer and must come back byte for byte."""
    jpeg = make_image()
    tricky = jpeg + b"\0" * (-len(jpeg) % 4) + MAGIC_BYTES + b"tail"
    with RecordIOWriter(tmp_path / "im2rec.rec") as w:
        w.write(0, pack_record(1.0, jpeg, id=0))
        w.write(1, pack_record(0.0, tricky, id=1))
        w.write(2, pack_record(12.0, make_image(fmt="PNG"), id=2))
    raw = (tmp_path / "im2rec.rec").read_bytes()
    assert raw.count(MAGIC_BYTES) == 4  # 3 records + 1 extra part for the split one
    result = convert_rec(tmp_path / "im2rec.rec", tmp_path / "out", workers=1)
    assert result.num_classes == 3
    entries = read_list(tmp_path / "out" / "train.txt")
    assert entries.paths == ["images/01/0.jpg", "images/00/1.jpg", "images/12/2.png"]
    assert (tmp_path / "out" / "images" / "00" / "1.jpg").read_bytes() == tricky
    assert read_classes(tmp_path / "out" / "classes.tsv") == {0: "00", 1: "01", 12: "12"}
    rerun = convert_rec(tmp_path / "im2rec.rec", tmp_path / "out", workers=1)
    assert (rerun.written, rerun.skipped) == (0, 3)  # the split record's size is known too


def test_output_is_a_file(tmp_path, mxnet_made) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="file"):
        convert_rec(mxnet_made, tmp_path / "file")


# -- reruns (issue 11): the source is recorded, finished images are size-checked, one writer at a time --

def _other_rec(folder, make_insightface_rec, make_image):
    images = [make_image((200, 30 * i, 90), fmt="PNG") for i in range(6)]
    return make_insightface_rec(folder, classes=3, per_class=2, images=images)


def test_rerun_from_a_different_rec_is_refused(tmp_path, make_insightface_rec, make_image) -> None:
    from typer.testing import CliRunner

    from fqtool.cli.app import app

    first = make_insightface_rec(tmp_path / "a", classes=3, per_class=2)
    out = tmp_path / "out"
    convert_rec(first, out, workers=1)
    before = _tree(out)
    record = json.loads((out / "source.json").read_text())
    assert record["size"] == (first / "train.rec").stat().st_size and len(record["index_sha256"]) == 64
    result = CliRunner().invoke(app, ["convert-rec", str(_other_rec(tmp_path / "b", make_insightface_rec,
                                                                     make_image)), str(out), "-q"])
    assert result.exit_code == 2, result.output
    assert "was converted from another .rec" in result.stderr and "already present" not in result.output
    assert _tree(out) == before  # nothing touched


def test_rerun_from_a_copy_of_the_same_rec_is_accepted(tmp_path, make_insightface_rec) -> None:
    import shutil

    first = make_insightface_rec(tmp_path / "a", classes=3, per_class=2)
    convert_rec(first, tmp_path / "out", workers=1)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)  # same bytes, new mtime, new path
    os.utime(copy / "train.rec", (1, 1))
    assert convert_rec(copy, tmp_path / "out", workers=1).skipped == 6


def test_truncated_and_empty_images_are_rewritten(tmp_path, make_insightface_rec) -> None:
    src = make_insightface_rec(tmp_path / "src", classes=3, per_class=2)
    convert_rec(src, tmp_path / "ref", workers=1)
    out = tmp_path / "out"
    convert_rec(src, out, workers=1)
    images = sorted(p for p in (out / "images").rglob("*.jpg"))
    images[0].write_bytes(images[0].read_bytes()[:100])  # truncated
    images[3].write_bytes(b"")  # zero bytes
    result = convert_rec(src, out, workers=1)
    assert (result.written, result.skipped) == (2, 4)
    assert _tree(out) == _tree(tmp_path / "ref")


def test_second_concurrent_run_gets_a_clear_message(tmp_path, make_insightface_rec) -> None:
    import fcntl

    src = make_insightface_rec(tmp_path / "src", classes=3, per_class=2)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".convert-rec.lock", "w") as held:  # what a running conversion holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="another convert-rec is writing into this folder"):
            convert_rec(src, out, workers=1)
        assert not (out / "images").exists() or not any((out / "images").iterdir())
    assert convert_rec(src, out, workers=1).written == 6  # released: the next run proceeds


def test_bad_bin_image_stops_before_any_training_image(tmp_path, make_insightface_rec, make_image) -> None:
    import pickle

    src = make_insightface_rec(tmp_path / "src", classes=3, per_class=2)
    images = [make_image(), make_image(), make_image(), b"GIF89a not supported"]
    (src / "lfw.bin").write_bytes(pickle.dumps((images, [True, False]), protocol=4))
    with pytest.raises(BadInputError, match=r"lfw\.bin: image 3 is not a recognised image format"):
        convert_rec(src, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()
