"""What a small or damaged file can make fqtool do is bounded (issue 25 items 9 and 10)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest

from fqtool.data import binfile
from fqtool.data.binfile import load_bin
from fqtool.data.convert import convert_rec
from fqtool.data.recordio import RecordIOReader
from fqtool.errors import FormatError


def _idx(folder: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split())) for line in (folder / "train.idx").read_text().splitlines()]


def test_an_index_naming_one_record_many_times_is_refused(tmp_path: Path, make_insightface_rec) -> None:
    src = make_insightface_rec(tmp_path / "src")
    rows = _idx(src)
    one = dict(rows)[1]
    extra = "".join(f"{100 + k}\t{one}\n" for k in range(2000))  # 2000 keys → the same record
    (src / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in rows) + extra)
    with pytest.raises(FormatError, match=f"names byte offset {one} 2001 times"):
        RecordIOReader(src / "train.rec")
    with pytest.raises(FormatError, match="index is damaged"):
        convert_rec(src, tmp_path / "out")
    assert not (tmp_path / "out" / "images").exists() or not any((tmp_path / "out" / "images").iterdir())


def test_a_record_whose_length_field_was_cut_is_refused_not_written_short(tmp_path: Path,
                                                                         make_insightface_rec) -> None:
    src = make_insightface_rec(tmp_path / "src")
    offset = dict(_idx(src))[2]
    data = bytearray((src / "train.rec").read_bytes())
    magic, lrec = struct.unpack_from("<II", data, offset)
    struct.pack_into("<II", data, offset, magic, (lrec & ((1 << 29) - 1)) // 2)
    (src / "train.rec").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="damaged length field"):
        convert_rec(src, tmp_path / "out", workers=1)
    with pytest.raises(FormatError, match="damaged length field"):
        RecordIOReader(src / "train.rec").read(2)
    assert not list((tmp_path / "out").glob("train.*"))


@pytest.mark.parametrize("issame", [[2, -7], [True, 5]])
def test_bin_issame_must_be_booleans(tmp_path: Path, make_image, issame) -> None:
    path = tmp_path / "v.bin"
    path.write_bytes(pickle.dumps(([make_image()] * 4, issame), protocol=4))
    with pytest.raises(FormatError, match="issame holds"):
        load_bin(path)


def test_a_bin_of_repeated_references_cannot_claim_gigabytes(tmp_path: Path, make_image, monkeypatch) -> None:
    image = make_image(size=(64, 64))
    path = tmp_path / "bomb.bin"
    refs = 4000
    path.write_bytes(pickle.dumps(([image] * refs, [True] * (refs // 2)), protocol=4))
    assert path.stat().st_size < 30_000 < refs * len(image) // 4
    monkeypatch.setattr(binfile, "_MIN_EXPANSION_BYTES", 1 << 20)  # the real floor is 2 GiB
    with pytest.raises(FormatError, match="repeat the same data"):
        load_bin(path)
    shared = tmp_path / "pairs.bin"  # pairs sharing their images, as make-pairs writes them, still load
    shared.write_bytes(pickle.dumps(([image, make_image((9, 9, 9))] * 8, [True] * 8), protocol=4))
    assert len(load_bin(shared).images) == 16


def test_options_that_allocate_are_bounded_before_allocating(tmp_path: Path) -> None:
    from fqtool.align.pipeline import AlignOptions
    from fqtool.data.lists import read_list
    from fqtool.errors import FqtoolError
    from fqtool.eval.serfiq import check_serfiq_options
    from fqtool.train.config import TrainConfig, validate

    with pytest.raises(FqtoolError, match="--size 112000: use a crop side between 16 and"):
        AlignOptions(size=112000).check()
    AlignOptions(size=224).check()
    with pytest.raises(FqtoolError, match="--serfiq-passes 100000000 is too many"):
        check_serfiq_options(100_000_000, 0.5)
    check_serfiq_options(100, 0.5)
    with pytest.raises(FqtoolError, match="--embedding-size must be"):
        validate(TrainConfig(data="x", embedding_size=100_000_000))
    (tmp_path / "l.txt").write_text("a.jpg 0\nb.jpg 1000000000\n")
    with pytest.raises(FormatError, match="line 2: label 1000000000 is beyond"):
        read_list(tmp_path / "l.txt")


def test_a_huge_list_of_one_image_is_refused(tmp_path: Path, monkeypatch) -> None:
    from fqtool.data import lists

    monkeypatch.setattr(lists, "REPEAT_CHECK_ENTRIES", 2000)  # the real threshold is 100,000 entries
    (tmp_path / "one.txt").write_text("a.jpg 0\n" * 5000)
    with pytest.raises(FormatError, match="5,000 of its 5,000 entries are the same image 'a.jpg'"):
        lists.read_list(tmp_path / "one.txt")
    (tmp_path / "many.txt").write_text("".join(f"{i % 2500}.jpg {i % 7}\n" for i in range(5000)))
    assert len(lists.read_list(tmp_path / "many.txt").paths) == 5000  # each image twice: fine


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs named pipes")
def test_lists_landmarks_and_scores_files_that_are_pipes_are_refused(tmp_path: Path) -> None:
    import os

    from fqtool.align.landmarks import read_landmarks
    from fqtool.data.lists import read_list
    from fqtool.errors import FqtoolError
    from fqtool.eval.score_files import load_scores

    os.mkfifo(tmp_path / "pipe.txt")  # opening it for reading would block for ever
    for read in (read_list, read_landmarks, lambda p: load_scores(p, 2)):
        with pytest.raises(FqtoolError, match="not a regular file"):
            read(tmp_path / "pipe.txt")
    if os.path.exists("/dev/zero"):
        with pytest.raises(FqtoolError, match="not a regular file"):
            read_list("/dev/zero")
