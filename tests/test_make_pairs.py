"""``make-pairs``: identity folders → a verification set with distinct, seeded, fold-balanced pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.data import pairs as pairs_mod
from fqtool.data.binfile import load_bin, load_verification_folder
from fqtool.errors import FqtoolError


@pytest.fixture
def identities(tmp_path, make_image) -> Path:
    """6 identities: 4 with 4 images, 2 with one (only impostor pairs can use those)."""
    root = tmp_path / "people"
    for person, count in enumerate([4, 4, 4, 4, 1, 1]):
        folder = root / f"person{person}"
        folder.mkdir(parents=True)
        for n in range(count):
            (folder / f"{n}.jpg").write_bytes(make_image((40 * person, 20 * n + 10, 90)))
    return root


def _run(args: list[str]):
    return CliRunner().invoke(app, ["make-pairs", *args])


def _identity_of(folder: Path) -> list[str]:
    """Image index → identity, from sources.txt."""
    lines = (folder / "sources.txt").read_text().splitlines()
    return [line.split(" ", 1)[1].split("/")[0] for line in lines]


def test_folder_output_pairs_are_right_distinct_and_spread(identities, tmp_path) -> None:
    out = tmp_path / "set"
    res = _run([str(identities), str(out), "--genuine", "20", "--impostor", "20", "--seed", "3"])
    assert res.exit_code == 0, res.output
    vset = load_verification_folder(out)
    who = _identity_of(out)
    assert len(vset.issame) == 40 and vset.issame.sum() == 20
    sources = (out / "sources.txt").read_text().splitlines()
    keys = set()
    for i, same in enumerate(vset.issame.tolist()):
        a, b = who[2 * i], who[2 * i + 1]
        assert (a == b) == same
        pair = tuple(sorted((sources[2 * i].split()[1], sources[2 * i + 1].split()[1])))
        assert pair[0] != pair[1] and pair not in keys
        keys.add(pair)
    folds = vset.issame.reshape(10, 4)  # insightface's sequential 10 folds: 2 genuine + 2 impostor each
    assert (folds.sum(axis=1) == 2).all()


def test_bin_output_is_seeded(identities, tmp_path) -> None:
    args = [str(identities), "--genuine", "6", "--impostor", "6"]
    for name, seed in (("a.bin", "0"), ("b.bin", "0"), ("c.bin", "1")):
        assert _run([args[0], str(tmp_path / name), *args[1:], "--seed", seed]).exit_code == 0
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.bin", "b.bin", "c.bin"))
    assert a == b and a != c
    vset = load_bin(tmp_path / "a.bin")
    assert len(vset.images) == 24 and vset.issame.sum() == 6


def test_rejection_sampling_gives_distinct_valid_pairs(monkeypatch) -> None:
    monkeypatch.setattr(pairs_mod, "_ENUMERATE_LIMIT", 0)
    labels = np.repeat(np.arange(30), 5)
    drawn = pairs_mod.draw_pairs(labels, 100, 100, seed=1)
    assert len({tuple(sorted((a, b))) for a, b, _ in drawn}) == 200
    assert all((labels[a] == labels[b]) == same and a != b for a, b, same in drawn)
    assert sum(same for _, _, same in drawn) == 100


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--genuine", "25"], "cannot draw 25 distinct genuine pairs"),  # 4 ids × C(4,2) = 24
        (["--genuine", "0", "--impostor", "0"], "at least one pair"),
    ],
)
def test_impossible_requests_are_one_line_and_write_nothing(identities, tmp_path, extra, needle) -> None:
    out = tmp_path / "x.bin"
    res = _run([str(identities), str(out), *extra])
    assert res.exit_code == 2 and needle in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_one_identity_has_no_impostors(tmp_path, make_image) -> None:
    (tmp_path / "p" / "only").mkdir(parents=True)
    for n in range(3):
        (tmp_path / "p" / "only" / f"{n}.jpg").write_bytes(make_image((n * 50, 0, 0)))
    with pytest.raises(FqtoolError, match="impostor pairs need two or more identities"):
        pairs_mod.make_pairs(tmp_path / "p", tmp_path / "o.bin", genuine=1, impostor=1)


def test_bad_image_and_busy_output_write_nothing(identities, tmp_path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    res = _run([str(identities), str(busy), "--genuine", "2", "--impostor", "2"])
    assert res.exit_code == 2 and "not empty" in res.output
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
    for jpg in identities.rglob("*.jpg"):
        jpg.write_bytes(b"not an image")
    out = tmp_path / "new"
    res = _run([str(identities), str(out), "--genuine", "2", "--impostor", "2"])
    assert res.exit_code == 2 and "not a JPEG/PNG/BMP/WebP image" in res.output
    assert not out.exists()
