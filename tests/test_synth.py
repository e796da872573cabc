"""Synthetic data: generator, degradations, the data-set writer and ``fqtool synth``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.data.binfile import load_bin
from fqtool.data.datasets import open_dataset
from fqtool.data.rec_layout import image_layout
from fqtool.data.recordio import RecordIOReader, unpack_record
from fqtool.data.synth import (
    CLEAN,
    DEGRADATION_KINDS,
    SynthConfig,
    degrade,
    generate_face,
    identity_params,
    iter_val_pairs,
    render_face,
    sample_degradation,
    write_synthetic_dataset,
)
from fqtool.errors import FqtoolError

SMALL = {"num_identities": 3, "images_per_identity": 4, "val_identities": 3, "val_pairs": 5}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    write_synthetic_dataset(out, **SMALL, write_folder=True)
    return out


def test_generate_face_is_rgb_uint8_and_deterministic() -> None:
    ident = identity_params(0, 1)
    a = generate_face(ident, np.random.default_rng(3))
    b = generate_face(ident, np.random.default_rng(3))
    c = generate_face(ident, np.random.default_rng(4))
    assert a.shape == (112, 112, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.std() > 20  # not a flat colour


def _crop(image: np.ndarray) -> np.ndarray:
    return image[20:100, 24:88].astype(np.float32)


def _margin(images: np.ndarray, means: np.ndarray) -> float:
    """Mean L1 distance to the own identity's clean mean minus that to the other identities' means."""
    n = len(means)
    own = [np.abs(images[i] - means[i]).mean() for i in range(n)]
    other = [np.mean([np.abs(images[i] - means[j]).mean() for j in range(n) if j != i]) for i in range(n)]
    return float(np.mean(own) - np.mean(other))


def test_identity_structure_and_degradations_destroy_it() -> None:
    idents = [identity_params(0, i) for i in range(6)]

    def faces(level: float = 0.0, kind: str = CLEAN, first: int = 4) -> np.ndarray:
        return np.array([[_crop(generate_face(p, np.random.default_rng([5, i, n]), level=level, kind=kind))
                          for n in range(first, 8)] for i, p in enumerate(idents)])

    train = faces(first=0)[:, :4]
    means = train.mean(axis=1)
    clean = faces()
    within = np.mean([np.abs(clean[i] - means[i]).mean() for i in range(6)])
    between = np.mean([np.abs(clean[i] - means[j]).mean() for i in range(6) for j in range(6) if j != i])
    assert between > within * 1.25
    clean_margin = _margin(clean, means)
    assert clean_margin < -8
    for kind in DEGRADATION_KINDS:
        mild, heavy = _margin(faces(0.3, kind), means), _margin(faces(0.95, kind), means)
        assert heavy > 0.6 * clean_margin, kind  # most of the identity signal is gone
        assert heavy > mild, kind


def test_degrade_keeps_shape_and_rejects_unknown_kind() -> None:
    img = render_face(identity_params(0, 0), np.random.default_rng(0))
    for kind in DEGRADATION_KINDS:
        out = degrade(img, kind, 0.5, np.random.default_rng(1))
        assert out.shape == img.shape and out.dtype == np.float32
        assert not np.allclose(out, img)
    with pytest.raises(FqtoolError, match="unknown degradation"):
        degrade(img, "sepia", 0.5, np.random.default_rng(1))


def test_sample_degradation_fraction_and_levels() -> None:
    rng = np.random.default_rng(0)
    assert all(sample_degradation(rng, 0.0) == (CLEAN, 0.0) for _ in range(100))
    draws = [sample_degradation(rng, 1.0) for _ in range(500)]
    assert {k for k, _ in draws} == set(DEGRADATION_KINDS)
    assert all(0.0 < level <= 1.0 for _, level in draws)
    half = [sample_degradation(rng, 0.5)[0] != CLEAN for _ in range(2000)]
    assert 0.45 < np.mean(half) < 0.55


def test_val_pairs_use_held_out_identities() -> None:
    pairs = list(iter_val_pairs(20, first_identity=7, num_identities=3, seed=0))
    assert [same for _, _, same in pairs] == [p % 2 == 0 for p in range(20)]
    for a, b, same in pairs:
        assert 7 <= a.label < 10 and 7 <= b.label < 10
        assert (a.label == b.label) == same


def test_recordio_layout(small_set: Path) -> None:
    with RecordIOReader(small_set / "train.rec") as reader:
        layout = image_layout(reader)
        assert layout.header == (13, 16)
        assert layout.keys.tolist() == list(range(1, 13))
        assert layout.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
        head, image = unpack_record(reader.read(0))
        assert head.flag == 2 and image == b""
        head, image = unpack_record(reader.read(5))
        assert head.flag == 0 and head.label == 1.0 and head.id == 5 and image[:2] == b"\xff\xd8"
        head, _ = unpack_record(reader.read(14))
        assert head.label.tolist() == [5.0, 9.0]
    assert (small_set / "property").read_text() == "3,112,112"
    dataset = open_dataset(small_set)
    assert len(dataset) == 12 and dataset.num_classes == 3
    image, label = dataset[11]
    assert tuple(image.shape) == (3, 112, 112) and label == 2


def test_csvs_bin_folder_and_manifest(small_set: Path) -> None:
    rows = _read_csv(small_set / "degradations.csv")
    dataset = open_dataset(small_set)
    assert [r["name"] for r in rows] == [dataset.name(i) for i in range(len(dataset))]
    assert [int(r["label"]) for r in rows] == [0] * 4 + [1] * 4 + [2] * 4
    for r in rows:
        assert (r["kind"] == CLEAN) == (float(r["level"]) == 0.0)
    vset = load_bin(small_set / "val.bin")
    assert len(vset.images) == 10 and vset.issame.tolist() == [True, False] * 2 + [True]
    quality = _read_csv(small_set / "val_quality.csv")
    assert [int(r["index"]) for r in quality] == list(range(10))
    for r in quality:
        assert float(r["quality"]) == pytest.approx(1.0 - float(r["level"]), abs=1e-6)
    assert len(list((small_set / "images").glob("*/*.jpg"))) == 12
    assert sorted(p.name for p in (small_set / "images").iterdir()) == ["0000", "0001", "0002"]
    manifest = json.loads((small_set / "synth.json").read_text())
    assert manifest["train"]["num_images"] == 12 and manifest["val"]["identities"] == [3, 6]
    assert manifest["train"]["degraded_images"] == sum(r["kind"] != CLEAN for r in rows)
    assert not list(small_set.glob(".*"))  # no temporary files left


def test_same_seed_gives_identical_files(small_set: Path, tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "again", **SMALL, write_folder=True)
    for path in sorted(small_set.rglob("*")):
        if path.is_file():
            twin = tmp_path / "again" / path.relative_to(small_set)
            assert twin.read_bytes() == path.read_bytes(), path.name
    write_synthetic_dataset(tmp_path / "other", **SMALL, seed=1)
    assert (tmp_path / "other" / "train.rec").read_bytes() != (small_set / "train.rec").read_bytes()


def test_interrupted_write_leaves_no_files(tmp_path: Path) -> None:
    def stop(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_synthetic_dataset(tmp_path, **SMALL, on_progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_config_validation() -> None:
    assert SynthConfig().total_images == 24 * 24 + 400
    with pytest.raises(FqtoolError, match="degraded fraction"):
        SynthConfig(degraded_fraction=1.5)
    with pytest.raises(FqtoolError, match="held-out"):
        SynthConfig(val_identities=1)
    with pytest.raises(FqtoolError, match="image format"):
        SynthConfig(image_format="gif")


def test_cli_synth(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["synth", str(out), "--identities", "2", "--images-per-identity", "2",
                                 "--val-identities", "2", "--val-pairs", "2", "--format", "png", "-q"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 training images of 2 identities" in result.output
    assert (out / "train.rec").is_file() and (out / "val.bin").is_file()
    assert json.loads((out / "synth.json").read_text())["image_format"] == "png"
    result = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--format", "gif"])
    assert result.exit_code == 2
    assert "image format" in result.output


def test_jitter_scales_the_per_image_variation(tmp_path: Path) -> None:
    from fqtool.data.synth import generate_face, identity_params

    def spread(jitter: float) -> float:
        identity = identity_params(0, 5)
        faces = [generate_face(identity, np.random.default_rng([3, n]), jitter=jitter).astype(float)
                 for n in range(6)]
        centre = np.mean(faces, axis=0)[30:100, 25:87]  # the face, not the random background
        return float(np.mean([np.abs(f[30:100, 25:87] - centre).mean() for f in faces]))

    assert spread(0.3) < 0.8 * spread(1.0)
    args = ["synth", str(tmp_path / "j"), "--identities", "2", "--images-per-identity", "2",
            "--val-pairs", "0", "--jitter", "0.5", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "j" / "synth.json").read_text())["jitter"] == 0.5
    with pytest.raises(FqtoolError, match="jitter"):
        SynthConfig(jitter=3.0)
