"""convert-rec / make-list through the CLI: normal runs and every bad input → exit 2, one line naming
the file, nothing half-written."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
from typer.testing import CliRunner

from fqtool.cli.app import app

runner = CliRunner()


def _bad(args: list[str], needle: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:") and needle in lines[0], lines[0]
    return lines[0]


def _nothing_written(out) -> None:
    """No list, no temporary files, no images (only empty folders at most)."""
    if not out.exists():
        return
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files == [], files


def _copy_fixture(mxnet_made, dst):
    dst.mkdir()
    for name in ("train.rec", "train.idx", "property"):
        shutil.copy(mxnet_made / name, dst / name)
    return dst


def test_convert_rec_cli(tmp_path, mxnet_made) -> None:
    result = runner.invoke(app, ["convert-rec", str(mxnet_made), str(tmp_path / "out"), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "converted 18 images of 6 classes" in result.output and "lfw" in result.output
    assert (tmp_path / "out" / "train.txt").is_file()
    again = runner.invoke(app, ["convert-rec", str(mxnet_made), str(tmp_path / "out"), "--no-bins",
                                "--list-format", "lst", "--limit", "3"])
    assert again.exit_code == 0 and "3 already present" in again.output
    assert len((tmp_path / "out" / "train.lst").read_text().splitlines()) == 3


def test_make_list_cli(tmp_path, make_image) -> None:
    for person in ("p1", "p2"):
        (tmp_path / "faces" / person).mkdir(parents=True)
        (tmp_path / "faces" / person / "a.jpg").write_bytes(make_image())
    (tmp_path / "faces" / "p2" / "b.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "list.txt"
    args = ["make-list", str(tmp_path / "faces"), "-o", str(out), "--format", "semicolon", "--check"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "left out 1 unreadable image: p2/b.jpg" in result.output
    assert out.read_text() == "faces/p1/a.jpg;0\nfaces/p2/a.jpg;1\n"
    assert (tmp_path / "list.classes.tsv").read_text() == "0\tp1\n1\tp2\n"


def test_truncated_rec(tmp_path, mxnet_made) -> None:
    src = _copy_fixture(mxnet_made, tmp_path / "src")
    raw = (src / "train.rec").read_bytes()
    (src / "train.rec").write_bytes(raw[:60000])  # cuts image records; header 0's offset is past the end
    _bad(["convert-rec", str(src), str(tmp_path / "out")], "train.idx")
    (src / "train.idx").unlink()  # without the index: a sequential scan meets the cut record
    _bad(["convert-rec", str(src), str(tmp_path / "out")], "train.rec: truncated record at byte offset")
    _nothing_written(tmp_path / "out")


def test_truncated_last_image(tmp_path, make_insightface_rec) -> None:
    src = make_insightface_rec(tmp_path / "src", header_first=True)
    idx = dict(line.split("\t") for line in (src / "train.idx").read_text().splitlines())
    (src / "train.rec").write_bytes((src / "train.rec").read_bytes()[: int(idx["6"]) + 100])
    (src / "train.idx").write_text("".join(f"{k}\t{idx[str(k)]}\n" for k in range(7)))
    line = _bad(["convert-rec", str(src), str(tmp_path / "out")], "train.rec")
    assert "truncated" in line
    assert not (tmp_path / "out" / "train.txt").exists()
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


def test_wrong_magic(tmp_path, mxnet_made) -> None:
    src = _copy_fixture(mxnet_made, tmp_path / "src")
    raw = bytearray((src / "train.rec").read_bytes())
    raw[0:4] = b"\x00\x00\x00\x00"
    (src / "train.rec").write_bytes(bytes(raw))
    line = _bad(["convert-rec", str(src), str(tmp_path / "out")], "train.rec")
    assert "byte offset 0" in line and "magic" in line
    assert not (tmp_path / "out" / "train.txt").exists()


def test_idx_past_end(tmp_path, mxnet_made) -> None:
    src = _copy_fixture(mxnet_made, tmp_path / "src")
    with open(src / "train.idx", "a") as fh:
        fh.write("99\t99999999\n")
    line = _bad(["convert-rec", str(src), str(tmp_path / "out")], "train.idx")
    assert "past the end" in line
    _nothing_written(tmp_path / "out")


def test_non_image_payload(tmp_path, make_insightface_rec, make_image) -> None:
    images = [make_image(), b"GIF89a is not supported" + b"\0" * 40, make_image()]
    src = make_insightface_rec(tmp_path / "src", classes=1, per_class=3, images=images)
    line = _bad(["convert-rec", str(src), str(tmp_path / "out"), "--workers", "1"], "train.rec")
    assert "record 2 is not an encoded image" in line
    assert not (tmp_path / "out" / "train.txt").exists()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp")]


def test_unreadable_image_in_folder(tmp_path, make_image) -> None:
    """make-list --check leaves broken images out (see test_make_list_cli); nothing readable is an error."""
    (tmp_path / "faces" / "p1").mkdir(parents=True)
    (tmp_path / "faces" / "p1" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    line = _bad(["make-list", str(tmp_path / "faces"), "--check"], "faces")
    assert "no images left" in line
    assert not (tmp_path / "faces" / "train.txt").exists()


def test_empty_folder(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    _bad(["make-list", str(tmp_path / "empty")], "empty: no images found")
    _bad(["convert-rec", str(tmp_path / "empty"), str(tmp_path / "out")], "empty: folder has no train.rec")
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "empty").iterdir()) == []


class _Evil:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_bin(tmp_path, mxnet_made) -> None:
    src = _copy_fixture(mxnet_made, tmp_path / "src")
    marker = tmp_path / "pwned"
    (src / "lfw.bin").write_bytes(pickle.dumps(([_Evil(marker)], [True])))
    line = _bad(["convert-rec", str(src), str(tmp_path / "out")], "lfw.bin")
    assert "refusing" in line and "system" in line
    assert not marker.exists()  # the payload never ran
    _nothing_written(tmp_path / "out")


def test_output_not_writable(tmp_path, mxnet_made, make_image) -> None:
    (tmp_path / "faces" / "p1").mkdir(parents=True)
    (tmp_path / "faces" / "p1" / "a.jpg").write_bytes(make_image())
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "out"  # mkdir under a regular file fails, also for root
    _bad(["convert-rec", str(mxnet_made), str(out)], "a_file")
    _bad(["make-list", str(tmp_path / "faces"), "-o", str(out / "l.txt")], "a_file")
    assert (tmp_path / "a_file").read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_output_folder_read_only(tmp_path, mxnet_made) -> None:
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:
        _bad(["convert-rec", str(mxnet_made), str(tmp_path / "ro" / "out")], "ro")
    finally:
        os.chmod(tmp_path / "ro", 0o700)
