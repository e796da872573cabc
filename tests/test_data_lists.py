"""List files: the three written formats, the formats read, classes.tsv and make_list."""

from __future__ import annotations

import numpy as np
import pytest

from fqtool.data.lists import (
    format_list,
    make_list,
    read_classes,
    read_list,
    write_classes,
    write_list,
)
from fqtool.errors import BadInputError, FormatError


@pytest.mark.parametrize(
    ("fmt", "first_line"),
    [("space", "a/0.jpg 0"), ("semicolon", "a/0.jpg;0"), ("lst", "0\t0.000000\ta/0.jpg")],
)
def test_write_read_round_trip(tmp_path, fmt, first_line) -> None:
    paths, labels = ["a/0.jpg", "a/1.jpg", "b/x y.jpg"], [0, 0, 1]
    write_list(tmp_path / "l.txt", paths, labels, fmt)
    text = (tmp_path / "l.txt").read_text()
    assert text.splitlines()[0] == first_line
    back = read_list(tmp_path / "l.txt")
    assert back.fmt == fmt and back.paths == paths and back.labels.tolist() == labels
    assert back.root == tmp_path


def test_read_magface_and_bare_lists(tmp_path) -> None:
    (tmp_path / "m.list").write_text("x/1.jpg 0 7 0\nx/2.jpg 0 3 0\n")
    assert read_list(tmp_path / "m.list").labels.tolist() == [7, 3]
    (tmp_path / "img.list").write_text("# comment\nx/1.jpg\n\nx/2.jpg\n")
    bare = read_list(tmp_path / "img.list")
    assert bare.paths == ["x/1.jpg", "x/2.jpg"] and bare.labels.tolist() == [-1, -1]


def test_bad_list_lines(tmp_path) -> None:
    (tmp_path / "b.txt").write_text("a.jpg 0\nb.jpg notanumber\n")
    with pytest.raises(FormatError, match=r"b\.txt.*line 2"):
        read_list(tmp_path / "b.txt")
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(BadInputError, match="no entries"):
        read_list(tmp_path / "e.txt")


def test_classes_round_trip(tmp_path) -> None:
    write_classes(tmp_path / "classes.tsv", ["alice", "bob smith"])
    assert (tmp_path / "classes.tsv").read_text() == "0\talice\n1\tbob smith\n"
    assert read_classes(tmp_path / "classes.tsv") == {0: "alice", 1: "bob smith"}
    write_classes(tmp_path / "gaps.tsv", {12: "x", 3: "y"})
    assert (tmp_path / "gaps.tsv").read_text() == "3\ty\n12\tx\n"


def test_format_list_rejects_unknown_format() -> None:
    with pytest.raises(BadInputError, match="unknown list format"):
        format_list(["a"], np.array([0]), "csv")


def _tree(root, make_image, counts):
    for person, n in counts.items():
        (root / person).mkdir(parents=True)
        for k in range(n):
            (root / person / f"{k:02d}.jpg").write_bytes(make_image())


def test_make_list_defaults(tmp_path, make_image) -> None:
    _tree(tmp_path / "faces", make_image, {"b": 2, "a": 1, "c": 3})
    result = make_list(tmp_path / "faces")
    assert result.list_path == tmp_path / "faces" / "train.txt"
    assert (result.num_images, result.num_classes) == (6, 3)
    lines = (tmp_path / "faces" / "train.txt").read_text().splitlines()
    assert lines[:3] == ["a/00.jpg 0", "b/00.jpg 1", "b/01.jpg 1"]
    assert read_classes(result.classes_path) == {0: "a", 1: "b", 2: "c"}
    again = make_list(tmp_path / "faces")  # the list itself is not an image: same result
    assert again.num_images == 6


def test_make_list_options(tmp_path, make_image) -> None:
    _tree(tmp_path / "faces", make_image, {"a": 1, "b": 2, "c": 3})
    out = tmp_path / "lists" / "mine.lst"
    result = make_list(tmp_path / "faces", fmt="lst", min_images=2, output=out)
    assert result.skipped_classes == 1 and result.num_classes == 2
    entries = read_list(out)
    assert entries.paths[0] == "../faces/b/00.jpg" and entries.labels.tolist() == [0, 0, 1, 1, 1]
    assert result.classes_path == tmp_path / "lists" / "mine.classes.tsv"
    absolute = make_list(tmp_path / "faces", absolute=True, output=tmp_path / "abs.txt")
    first = read_list(absolute.list_path).paths[0]
    assert first.startswith("/") and first.endswith("faces/a/00.jpg")


def test_make_list_check_leaves_out_bad_images(tmp_path, make_image) -> None:
    _tree(tmp_path / "faces", make_image, {"a": 2, "b": 1})
    (tmp_path / "faces" / "a" / "01.jpg").write_bytes(b"corrupt")
    seen = []
    result = make_list(tmp_path / "faces", check=True, on_progress=seen.append)
    assert result.bad_images == ["a/01.jpg"] and result.num_images == 2 and sum(seen) == 3
    assert "01.jpg" not in (tmp_path / "faces" / "train.txt").read_text()


def test_make_list_empty(tmp_path) -> None:
    (tmp_path / "empty" / "person").mkdir(parents=True)
    with pytest.raises(BadInputError, match="no images"):
        make_list(tmp_path / "empty")
    assert not (tmp_path / "empty" / "train.txt").exists()
