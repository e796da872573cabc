"""RecordIO: byte-level fidelity with MXNet's writer, split records, index handling, errors."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest

from fqtool.data.rec_layout import image_layout
from fqtool.data.recordio import (
    IR_HEADER_SIZE,
    MAGIC,
    MAGIC_BYTES,
    RecordIOReader,
    RecordIOWriter,
    pack_record,
    rebuild_index,
    unpack_record,
)
from fqtool.errors import FormatError


def test_pack_unpack_scalar_and_array_labels() -> None:
    payload = pack_record(3.0, b"img", id=7, id2=9)
    assert len(payload) == IR_HEADER_SIZE + 3
    head, image = unpack_record(payload)
    assert (head.flag, head.label, head.id, head.id2, image) == (0, 3.0, 7, 9, b"img")
    head, image = unpack_record(pack_record([5, 1.0], b"jpeg"))
    assert head.flag == 2 and image == b"jpeg"
    assert head.label.dtype == np.float32 and head.label.tolist() == [5.0, 1.0]


def test_unpack_rejects_short_payload() -> None:
    with pytest.raises(FormatError):
        unpack_record(b"\0" * 10)
    with pytest.raises(FormatError, match="labels"):
        unpack_record(struct.pack("<IfQQ", 5, 0, 0, 0))


def _write(path, payloads, keys=None):
    keys = keys if keys is not None else range(len(payloads))
    with RecordIOWriter(path) as w:
        for k, p in zip(keys, payloads, strict=True):
            w.write(k, p)
    return RecordIOReader(path)


SPLIT_CASES = [
    b"abcd" + MAGIC_BYTES + b"xyz",  # aligned magic: split in two
    MAGIC_BYTES,
    MAGIC_BYTES * 3 + b"q",
    b"ab" + MAGIC_BYTES + b"cd",  # unaligned magic: not split
    b"1234" + MAGIC_BYTES,
    b"",
    b"x" * 5,
    bytes(range(256)) * 3,
]


def test_round_trip_with_embedded_magic(tmp_path) -> None:
    reader = _write(tmp_path / "a.rec", SPLIT_CASES)
    assert len(reader) == len(SPLIT_CASES)
    assert [reader.read(k) for k in reader.keys] == SPLIT_CASES
    assert [p for _, p in reader] == SPLIT_CASES
    assert (tmp_path / "a.rec").stat().st_size % 4 == 0


def test_split_parts_follow_dmlc_layout(tmp_path) -> None:
    _write(tmp_path / "a.rec", [b"abcd" + MAGIC_BYTES + b"xyz", b"ab" + MAGIC_BYTES + b"cd"])
    raw = (tmp_path / "a.rec").read_bytes()
    # first record: part 1 (cflag 1, 4 bytes), part 2 (cflag 3, 3 bytes + 1 pad)
    assert struct.unpack_from("<II", raw, 0) == (MAGIC, (1 << 29) | 4)
    assert struct.unpack_from("<II", raw, 12) == (MAGIC, (3 << 29) | 3)
    # second record: unaligned magic stays inside one whole record
    assert struct.unpack_from("<II", raw, 24) == (MAGIC, 8)


def test_random_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    payloads = []
    for i in range(60):
        body = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
        if i % 3 == 0 and len(body) >= 8:
            pos = int(rng.integers(0, len(body) // 4)) * 4
            body[pos:pos + 4] = MAGIC_BYTES
        payloads.append(bytes(body))
    keys = [int(k) for k in rng.permutation(1000)[:60]]
    reader = _write(tmp_path / "r.rec", payloads, keys)
    assert reader.keys == keys
    for k, p in zip(keys, payloads, strict=True):
        assert reader.read(k) == p


def test_writer_reproduces_mxnet_bytes(tmp_path, mxnet_made) -> None:
    """Re-writing MXNet's records in file order with our writer gives identical .rec and .idx bytes."""
    src = RecordIOReader(mxnet_made / "train.rec")
    order = np.argsort(src.offset_array)
    with RecordIOWriter(tmp_path / "train.rec") as w:
        for i in order.tolist():
            key = int(src.key_array[i])
            w.write(key, src.read(key))
    assert (tmp_path / "train.rec").read_bytes() == (mxnet_made / "train.rec").read_bytes()
    assert (tmp_path / "train.idx").read_text() == (mxnet_made / "train.idx").read_text()


def test_mxnet_fixture_layout(mxnet_made) -> None:
    manifest = json.loads((mxnet_made / "manifest.json").read_text())
    reader = RecordIOReader(mxnet_made / "train.rec")
    head, image = unpack_record(reader.read(0))
    assert head.flag == manifest["header_record"]["flag"] and image == b""
    assert head.label.tolist() == manifest["header_record"]["label"]
    for ident in manifest["identity_records"]:
        h, _ = unpack_record(reader.read(ident["index"]))
        assert h.label.tolist() == ident["range"]
    layout = image_layout(reader)
    assert layout.keys.tolist() == [im["index"] for im in manifest["images"]]
    assert layout.labels.tolist() == [im["class"] for im in manifest["images"]]
    assert layout.num_classes == manifest["num_classes"]


def test_missing_idx_scan_and_rebuild(tmp_path, mxnet_made) -> None:
    rec = tmp_path / "train.rec"
    rec.write_bytes((mxnet_made / "train.rec").read_bytes())
    reader = RecordIOReader(rec)  # no idx: keys come from the image-header ids
    assert sorted(reader.keys) == list(range(25))
    assert rebuild_index(rec, tmp_path / "train.idx") == 25
    assert (tmp_path / "train.idx").read_text() == (mxnet_made / "train.idx").read_text()


def test_scan_without_ids_uses_positions(tmp_path) -> None:
    _write(tmp_path / "p.rec", [b"a", b"b", b"c"], keys=[10, 20, 30])
    (tmp_path / "p.idx").unlink()
    assert RecordIOReader(tmp_path / "p.rec").keys == [0, 1, 2]


def test_reader_pickles_and_reopens(tmp_path) -> None:
    reader = _write(tmp_path / "a.rec", SPLIT_CASES)
    assert reader.read(0) == SPLIT_CASES[0]  # opens the file in this process
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._fh is None
    assert [clone.read(k) for k in clone.keys] == SPLIT_CASES
    clone._pid = -1  # as if forked into a DataLoader worker
    assert clone.read(3) == SPLIT_CASES[3]


def test_writer_discards_on_error(tmp_path) -> None:
    with pytest.raises(RuntimeError), RecordIOWriter(tmp_path / "x.rec") as w:
        w.write(0, b"data")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_wrong_magic_names_file_and_offset(tmp_path) -> None:
    reader = _write(tmp_path / "a.rec", [b"aaaa", b"bbbb"])
    raw = bytearray((tmp_path / "a.rec").read_bytes())
    raw[12:16] = b"JUNK"
    (tmp_path / "a.rec").write_bytes(bytes(raw))
    reader = RecordIOReader(tmp_path / "a.rec")
    with pytest.raises(FormatError, match=r"a\.rec.*byte offset 12"):
        reader.read(1)
    with pytest.raises(FormatError, match="byte offset 12"):
        list(reader)


def test_truncated_record(tmp_path) -> None:
    _write(tmp_path / "a.rec", [b"a" * 40, b"b" * 40])
    rec = tmp_path / "a.rec"
    rec.write_bytes(rec.read_bytes()[:-10])
    reader = RecordIOReader(rec)
    with pytest.raises(FormatError, match="truncated"):
        reader.read(1)
    with pytest.raises(FormatError, match="truncated"):
        list(reader)


def test_idx_offset_past_end(tmp_path) -> None:
    _write(tmp_path / "a.rec", [b"a" * 8])
    (tmp_path / "a.idx").write_text("0\t0\n1\t4096\n")
    with pytest.raises(FormatError, match=r"a\.idx.*key 1.*4096.*past the end"):
        RecordIOReader(tmp_path / "a.rec")


def test_bad_idx_text(tmp_path) -> None:
    _write(tmp_path / "a.rec", [b"a" * 8])
    (tmp_path / "a.idx").write_text("zero\tnothing\n")
    with pytest.raises(FormatError, match="a.idx"):
        RecordIOReader(tmp_path / "a.rec")
