"""Every list fqtool writes reads back as written, or the name is refused (issue 25 item 6)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fqtool.data.lists import LIST_FORMATS, format_list, make_list, read_list
from fqtool.data.pairs import make_pairs
from fqtool.errors import FormatError

ODD = [" ", "  ", "\t", ";", "#", "\n", "\r", "\x0b", "\x85", "\u2028", "é", "²", ",", '"', "0", "-1"]


def _random_names(rng: np.random.Generator, count: int) -> list[str]:
    names = []
    for _ in range(count):
        parts = [str(rng.choice(ODD)) if rng.random() < 0.35 else "ab"[int(rng.integers(2))]
                 for _ in range(int(rng.integers(1, 7)))]
        names.append("id/" + "".join(parts) + ".jpg")
    return names


@pytest.mark.parametrize("fmt", LIST_FORMATS)
def test_random_odd_names_read_back_or_are_refused(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(LIST_FORMATS.index(fmt))
    written = refused = 0
    for trial in range(300):
        names = _random_names(rng, 3)
        labels = rng.integers(-1, 5, size=3)
        try:
            text = format_list(names, labels, fmt)
        except FormatError as exc:
            assert "cannot be written in a" in str(exc) and "\n" not in str(exc)
            refused += 1
            continue
        path = tmp_path / f"{trial}.txt"
        path.write_text(text, encoding="utf-8", newline="\n")
        back = read_list(path)
        assert back.paths == names and back.labels.tolist() == labels.tolist(), text
        written += 1
    assert written > 30 and refused > 30  # both outcomes are exercised


@pytest.mark.parametrize(("name", "fmt"), [("a  b.jpg", "space"), ("a;b.jpg", "space"), ("x\ny.jpg", "lst"),
                                           ("t\tu\tv.jpg", "semicolon"), ("t\tu.jpg", "lst")])
def test_names_the_issue_found_are_refused(name: str, fmt: str) -> None:
    with pytest.raises(FormatError, match="cannot be written"):
        format_list([name, "ok.jpg"], [0, 1], fmt)


@pytest.mark.skipif(os.name != "posix", reason="needs byte file names")
def test_make_list_and_make_pairs_refuse_unwritable_names_in_one_line(tmp_path: Path, make_image) -> None:
    for person in ("p0", "p1"):
        (tmp_path / "in" / person).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "in" / person / f"{i}.jpg").write_bytes(make_image())
    (tmp_path / "in" / "p0" / "new\nline.jpg").write_bytes(make_image())
    with pytest.raises(FormatError, match="line break"):
        make_list(tmp_path / "in")
    with pytest.raises(FormatError, match="line break"):
        make_pairs(tmp_path / "in", tmp_path / "pairs", genuine=4, impostor=4)
    assert not (tmp_path / "pairs" / "sources.txt").exists()
    os.remove(tmp_path / "in" / "p0" / "new\nline.jpg")
    with open(os.fsencode(tmp_path / "in" / "p1") + b"/\xff\xfe.jpg", "wb") as handle:
        handle.write(make_image())
    with pytest.raises(FormatError, match="not valid UTF-8"):
        make_list(tmp_path / "in")
