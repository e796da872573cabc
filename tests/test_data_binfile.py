"""Verification .bin files: MXNet-era fixtures, round trips, the restricted unpickler, folder form."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from fqtool.data.binfile import (
    VerificationSet,
    decode_pairs,
    folder_to_bin,
    load_bin,
    load_verification_folder,
    save_bin,
    write_verification_folder,
)
from fqtool.errors import FormatError, UnsafePickleError


@pytest.mark.parametrize("name", ["lfw.bin", "lfw_py2style.bin"])
def test_fixture_bins(mxnet_made, name) -> None:
    manifest = json.loads((mxnet_made / "manifest.json").read_text())["verification"]
    vset = load_bin(mxnet_made / name)
    assert vset.num_pairs == manifest["pairs"] and len(vset.images) == 2 * manifest["pairs"]
    assert vset.issame.dtype == bool and vset.issame.tolist() == manifest["issame"]
    images = decode_pairs(vset)
    assert images.shape == (2 * manifest["pairs"], 3, 112, 112)
    # same-class pairs look alike, different-class pairs do not (the fixture's colours encode the class)
    means = images.float().mean((2, 3))
    gaps = (means[0::2] - means[1::2]).abs().max(1).values
    for (a, b), gap in zip(manifest["pair_classes"], gaps.tolist(), strict=True):
        assert (gap < 30) == (a == b)


def test_both_fixtures_hold_the_same_images(mxnet_made) -> None:
    assert load_bin(mxnet_made / "lfw.bin").images == load_bin(mxnet_made / "lfw_py2style.bin").images


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_array_images_load(tmp_path, mxnet_made, protocol) -> None:
    ref = load_bin(mxnet_made / "lfw.bin")
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in ref.images]
    with open(tmp_path / "n.bin", "wb") as fh:
        pickle.dump((arrays, np.array(ref.issame)), fh, protocol=protocol)
    vset = load_bin(tmp_path / "n.bin")
    assert vset.images == ref.images and vset.issame.tolist() == ref.issame.tolist()


def test_save_round_trip(tmp_path, mxnet_made) -> None:
    ref = load_bin(mxnet_made / "lfw.bin")
    save_bin(tmp_path / "out.bin", ref.images, ref.issame)
    back = load_bin(tmp_path / "out.bin")
    assert back.name == "out" and back.images == ref.images
    assert back.issame.tolist() == ref.issame.tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary left behind


class _Payload:
    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("kind", ["system", "exec", "eval_in_issame"])
def test_malicious_pickle_never_runs(tmp_path, kind) -> None:
    marker = tmp_path / "pwned"
    if kind == "system":
        obj = ([_Payload(os.system, f"touch {marker}")], [True])
    elif kind == "exec":
        obj = ([b"x", b"y"], [_Payload(exec, f"open({str(marker)!r}, 'w').close()")])
    else:
        obj = ([b"x", b"y"], _Payload(eval, f"open({str(marker)!r}, 'w')"))
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(obj))
    with pytest.raises(UnsafePickleError, match="evil.bin"):
        load_bin(tmp_path / "evil.bin")
    assert not marker.exists()


def test_object_arrays_are_refused(tmp_path) -> None:
    (tmp_path / "o.bin").write_bytes(pickle.dumps(([np.array([b"x"], dtype=object)], [True])))
    with pytest.raises(UnsafePickleError, match="o.bin"):
        load_bin(tmp_path / "o.bin")


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (([b"a", b"b", b"c"], [True]), "odd number"),
        (([b"a", b"b"], [True, False]), "issame has 2"),
        (([b"a", b"b"], "yes"), "issame is not"),
        ([b"a", b"b"], "images entry is not"),
        ("just a string", "expected a pickled"),
    ],
)
def test_malformed_bins(tmp_path, obj, match) -> None:
    (tmp_path / "m.bin").write_bytes(pickle.dumps(obj))
    with pytest.raises(FormatError, match=match):
        load_bin(tmp_path / "m.bin")


def test_not_a_pickle(tmp_path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(FormatError, match="junk.bin"):
        load_bin(tmp_path / "junk.bin")


def test_save_rejects_mismatch(tmp_path) -> None:
    with pytest.raises(FormatError):
        save_bin(tmp_path / "bad.bin", [b"a", b"b"], [True, True])
    assert not (tmp_path / "bad.bin").exists()


def test_folder_round_trip(tmp_path, mxnet_made) -> None:
    ref = load_bin(mxnet_made / "lfw.bin")
    write_verification_folder(ref, tmp_path / "lfw")
    lines = (tmp_path / "lfw" / "pairs.txt").read_text().splitlines()
    assert lines[0] == "images/000000.jpg images/000001.jpg 1"
    assert lines[1].endswith(" 0") and len(lines) == ref.num_pairs
    assert (tmp_path / "lfw" / "images" / "000003.jpg").read_bytes() == ref.images[3]
    back = load_verification_folder(tmp_path / "lfw")
    assert back.name == "lfw" and back.images == ref.images and back.issame.tolist() == ref.issame.tolist()
    vset = folder_to_bin(tmp_path / "lfw", tmp_path / "again.bin")
    assert isinstance(vset, VerificationSet) and load_bin(tmp_path / "again.bin").images == ref.images


def test_pickle_cannot_call_ndarray_directly(tmp_path) -> None:
    """``numpy.ndarray`` is only accepted as the class argument of array reconstruction."""
    (tmp_path / "nd.bin").write_bytes(pickle.dumps(([_Payload(np.ndarray, (1 << 20,))], [True])))
    with pytest.raises(FormatError, match="nd.bin"):
        load_bin(tmp_path / "nd.bin")
