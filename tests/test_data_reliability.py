"""Issue 11, data layer: symbolic-link loops, images outside identity folders, labels checked against the
declared class count, empty ``.rec`` files, ``.bin`` errors that name the file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.data.binfile import decode_pairs, load_bin
from fqtool.data.datasets import open_dataset
from fqtool.data.lists import read_list, scan_folder
from fqtool.data.recordio import RecordIOWriter, pack_record
from fqtool.errors import BadInputError, FormatError

runner = CliRunner()


@pytest.fixture
def people(tmp_path, make_image) -> Path:
    """``a/x.jpg``, ``b/y.jpg`` and ``top.jpg`` outside the identity folders."""
    root = tmp_path / "people"
    for person, name in (("a", "x.jpg"), ("b", "y.jpg")):
        (root / person).mkdir(parents=True)
        (root / person / name).write_bytes(make_image())
    (root / "top.jpg").write_bytes(make_image((10, 200, 10)))
    return root


@pytest.fixture
def looping(people) -> Path:
    """``people`` plus links that loop or point nowhere, at the top and inside an identity folder."""
    os.symlink("c", people / "c")  # loops on itself
    os.symlink("loop.jpg", people / "a" / "loop.jpg")
    os.symlink("nowhere.jpg", people / "b" / "gone.jpg")
    os.symlink(".", people / "b" / "self")  # a folder link: not followed, not an error
    return people


# -- item 7: symbolic-link loops are skipped and listed -------------------------------------------------

def test_scan_skips_and_lists_link_loops(looping) -> None:
    scan = scan_folder(looping)
    assert scan.paths == ["a/x.jpg", "b/y.jpg"] and scan.labels.tolist() == [0, 1]
    assert sorted(scan.skipped) == ["a/loop.jpg", "b/gone.jpg", "c"]
    assert any("skipped 3 symbolic links" in note for note in scan.notes(looping))


def test_make_list_with_link_loops(looping, tmp_path) -> None:
    out = tmp_path / "list.txt"
    result = runner.invoke(app, ["make-list", str(looping), "-o", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "skipped 3 symbolic links" in result.stderr and "a/loop.jpg" in result.stderr
    assert len(read_list(out).paths) == 2


def test_training_folder_with_link_loops(looping) -> None:
    dataset = open_dataset(looping)
    assert len(dataset) == 2 and dataset.num_classes == 2
    assert any("c" in note and "symbolic links" in note for note in dataset.notes)


# -- item 10: images next to identity folders are scored, or said to be left out ------------------------

def test_loose_images_left_out_and_named(people, tmp_path) -> None:
    dataset = open_dataset(people)
    assert [dataset.name(i) for i in range(len(dataset))] == ["a/x.jpg", "b/y.jpg"]
    assert any("left out 1 image outside" in note and "top.jpg" in note for note in dataset.notes)
    result = runner.invoke(app, ["make-list", str(people), "-o", str(tmp_path / "l.txt")])
    assert result.exit_code == 0 and "left out 1 image outside" in result.stderr
    assert "top.jpg" in result.stderr


def test_loose_images_included_for_scoring(people) -> None:
    dataset = open_dataset(people, include_loose=True)
    assert [dataset.name(i) for i in range(len(dataset))] == ["a/x.jpg", "b/y.jpg", "top.jpg"]
    assert dataset.labels.tolist() == [0, 1, -1] and dataset.notes == []
    image, label = dataset[2]
    assert label == -1 and int(image[1].float().mean()) > 150  # the green top-level image


def test_score_csv_has_loose_image_with_empty_label(looping, tmp_path) -> None:
    """Through the CLI: the top-level image is scored with an empty label, the links are skipped and
    named in a warning (before: a traceback on the looping link, and the top-level image dropped)."""
    import csv

    import torch

    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    weights = save_checkpoint(create_model("iresnet_tiny"), tmp_path / "tiny.safetensors")
    out = tmp_path / "q.csv"
    result = runner.invoke(app, ["score", str(looping), "-w", str(weights), "-o", str(out), "-j", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert "skipped 3 symbolic links" in result.stderr
    with open(out, newline="", encoding="utf-8") as fh:
        rows = {r["path"]: r["label"] for r in csv.DictReader(fh)}
    assert rows == {"a/x.jpg": "0", "b/y.jpg": "1", "top.jpg": ""}


# -- item 11: labels ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "match"), [
    ("a.jpg 0\nb.jpg 1.5\n", "line 2: label '1.5' is not an integer"),
    ("a.jpg;0\n\n# note\nb.jpg;-2\n", "line 4: negative label -2"),
    ("0\t0.500000\ta.jpg\n", "line 1: label '0.500000' is not an integer"),
])
def test_list_labels_must_be_integers(tmp_path, text, match) -> None:
    path = tmp_path / "list.txt"
    path.write_text(text)
    with pytest.raises(FormatError, match=match) as info:
        read_list(path)
    assert str(path) in str(info.value)


def test_lst_float_labels_still_read(tmp_path) -> None:
    path = tmp_path / "train.lst"
    path.write_text("0\t3.000000\ta.jpg\n1\t-1.000000\tb.jpg\n")
    assert read_list(path).labels.tolist() == [3, -1]


def test_list_label_above_classes_tsv(tmp_path, make_image) -> None:
    (tmp_path / "a.jpg").write_bytes(make_image())
    (tmp_path / "train.txt").write_text("a.jpg 0\na.jpg 1\na.jpg 2\n")
    (tmp_path / "classes.tsv").write_text("0\talice\n1\tbob\n")
    with pytest.raises(FormatError, match="label 2, but classes.tsv declares 2 classes") as info:
        open_dataset(tmp_path / "train.txt")
    assert "train.txt" in str(info.value)
    (tmp_path / "classes.tsv").write_text("0\talice\n1\tbob\n2\tcarol\n3\tdave\n")
    assert open_dataset(tmp_path / "train.txt").num_classes == 4  # the declared count


def _im2rec(folder: Path, labels: list[float], image: bytes, with_idx: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rec = folder / "train.rec"
    with RecordIOWriter(rec) as writer:
        for i, label in enumerate(labels):
            writer.write(i, pack_record(label, image, id=i))
    if not with_idx:
        (folder / "train.idx").unlink()
    return rec


def test_rec_label_above_property(tmp_path, make_image) -> None:
    rec = _im2rec(tmp_path, [0.0, 1.0, 2.0, 2.0], make_image())
    (tmp_path / "property").write_text("2,112,112\n")
    with pytest.raises(FormatError, match="label 2, but property .* declares 2 classes"):
        open_dataset(rec)
    (tmp_path / "property").write_text("3,112,112\n")
    assert open_dataset(rec).num_classes == 3


def test_rec_huge_property_is_refused_before_allocating(tmp_path, make_image) -> None:
    rec = _im2rec(tmp_path, [0.0, 1.0], make_image())
    (tmp_path / "property").write_text("2000000000,112,112\n")
    with pytest.raises(FormatError, match="declares 2,000,000,000 classes but the .rec holds only 2 images"):
        open_dataset(rec)


def test_rec_non_integer_label(tmp_path, make_image) -> None:
    rec = _im2rec(tmp_path, [0.0, 1.5], make_image())
    with pytest.raises(FormatError, match="record 1 has label 1.5, not an integer") as info:
        open_dataset(rec)
    assert str(rec) in str(info.value)


def test_rec_header_record_range_checked(tmp_path, make_image) -> None:
    """A header record claiming 2^24 images must not build a 2^24-key table for a 2-record file."""
    rec = tmp_path / "train.rec"
    with RecordIOWriter(rec) as writer:
        writer.write(0, pack_record([float(1 << 24), float((1 << 24) + 2)], b""))
        writer.write(1, pack_record(0.0, make_image(), id=1))
    with pytest.raises(FormatError, match="images are keys 1..16777215, but the index holds only 2"):
        open_dataset(rec)


def test_empty_rec_without_idx_is_an_error(tmp_path) -> None:
    (tmp_path / "train.rec").write_bytes(b"")
    result = runner.invoke(app, ["convert-rec", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "holds no image records" in result.stderr and "converted" not in result.stdout


# -- low: .bin image errors name the file ---------------------------------------------------------------

def test_bin_image_error_names_the_file(tmp_path, make_image) -> None:
    path = tmp_path / "lfw.bin"
    images = [make_image(), b"\xff\xd8\xff broken", make_image(), make_image()]
    path.write_bytes(pickle.dumps((images, [True, False]), protocol=4))
    with pytest.raises(BadInputError, match=r"lfw\.bin.*image 1") as info:
        decode_pairs(load_bin(path))
    assert str(path) in str(info.value)


def test_make_list_check_reports_bad_images(people, tmp_path) -> None:
    (people / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    result = runner.invoke(app, ["make-list", str(people), "-o", str(tmp_path / "l.txt"), "--check"])
    assert result.exit_code == 0, result.output
    assert "left out 1 unreadable image: a/bad.png" in result.stderr
    assert np.array_equal(read_list(tmp_path / "l.txt").labels, [0, 1])


def test_training_refuses_unlabelled_images_naming_the_data(tmp_path, make_image) -> None:
    from fqtool.errors import FqtoolError
    from fqtool.train.data import open_training_data

    (tmp_path / "a.jpg").write_bytes(make_image())
    (tmp_path / "list.txt").write_text("a.jpg 0\na.jpg -1\na.jpg 1\n")
    with pytest.raises(FqtoolError, match=r"list.txt: 1 of 3 images have label -1 \(no identity\), e.g. a"):
        open_training_data(str(tmp_path / "list.txt"), size=(112, 112))
