"""Saved features and resumable embedding parts are trusted only when they are what they claim
(issue 25 items 1, 2 and the .npz size bombs of item 11)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from _ijb_fixture import write_ijb_release
from fqtool.data.ijb import load_ijb
from fqtool.errors import FormatError, FqtoolError
from fqtool.eval import feature_checks, ijb_embed
from fqtool.eval.feature_checks import model_fingerprint, read_npz, resume_key
from fqtool.eval.features import FeatureSet, load_features, save_features
from fqtool.eval.ijb import IjbFeatures, Pooling, evaluate_ijb, load_ijb_features, save_ijb_features
from fqtool.models import create_model


@pytest.fixture(scope="module")
def meta(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ijb") / "IJB_release"
    write_ijb_release(root, "IJBB", templates_per_id=2, impostors=60, seed=1)
    return load_ijb(root / "IJBB")


def _tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("iresnet_tiny").eval()


def test_resume_key_follows_the_weights_content_not_the_name() -> None:
    a, b = _tiny(0), _tiny(1)
    assert model_fingerprint(a) == model_fingerprint(_tiny(0)) != model_fingerprint(b)
    key = resume_key(a, set="IJBC", flip=True, chunk=4096)
    assert key == resume_key(_tiny(0), set="IJBC", flip=True, chunk=4096)
    assert key != resume_key(a, set="IJBC", flip=False, chunk=4096)
    assert key != resume_key(b, set="IJBC", flip=True, chunk=4096)


def test_parts_of_another_model_with_the_same_file_name_are_refused(meta, tmp_path: Path) -> None:
    info = {"weights": "model.safetensors", "arch": "iresnet_tiny"}
    parts = tmp_path / "F.parts"
    ijb_embed.embed_ijb(_tiny(0), meta, parts=parts, flip=False, batch_size=64, chunk=40, info=info)
    with pytest.raises(FqtoolError, match="another run"):
        ijb_embed.embed_ijb(_tiny(1), meta, parts=parts, flip=False, batch_size=64, chunk=40, info=info)
    # a NaN chunk left in the parts is embedded again, not used
    chunk = sorted(parts.glob("chunk_*.npz"))[0]
    with np.load(chunk) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["embeddings"][:] = np.nan
    np.savez(chunk, **arrays)
    model, seen = _tiny(0), []
    model.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    again = ijb_embed.embed_ijb(model, meta, parts=parts, flip=False, batch_size=64, chunk=40, info=info)
    assert sum(seen) == 40 and np.isfinite(again.embeddings).all()


def _ijb(meta, **changes) -> IjbFeatures:
    rng = np.random.default_rng(0)
    n = len(meta.images)
    base = IjbFeatures(
        name="IJBB",
        images=meta.images,
        embeddings=rng.normal(size=(n, 8)).astype(np.float32),
        quality=rng.uniform(size=n).astype(np.float32),
        detector_scores=meta.detector_scores,
        templates=meta.templates,
        medias=meta.medias,
        pair_t1=meta.pair_t1,
        pair_t2=meta.pair_t2,
        pair_label=meta.pair_label,
        meta={},
    )
    return replace(base, **changes)


def _raw_ijb_file(path: Path, f: IjbFeatures, **override) -> Path:
    """An IJB features file written as it is (no conversion on the way), with some arrays replaced."""
    arrays = {
        "name": np.array(f.name),
        "images": np.asarray(f.images).astype(str),
        "embeddings": f.embeddings,
        "quality": f.quality,
        "detector_scores": f.detector_scores,
        "templates": f.templates,
        "medias": f.medias,
        "pair_t1": f.pair_t1,
        "pair_t2": f.pair_t2,
        "pair_label": f.pair_label,
        "meta": np.array('{"kind": "ijb", "format_version": 1}'),
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("what", "needle"),
    [
        ("nan", "rows are NaN or infinite"),
        ("label5", "pair_label holds 5"),
        ("strings", "embeddings holds text"),
        ("complex", "quality holds complex numbers"),
        ("quality2d", "quality must be 1-D"),
        ("template_floats", "templates holds"),
    ],
)
def test_ijb_features_are_validated_like_bin_features(meta, tmp_path: Path, what: str, needle: str) -> None:
    f = _ijb(meta)
    n = len(f.embeddings)
    override = {
        "nan": {"embeddings": np.where(np.arange(n)[:, None] == 3, np.nan, f.embeddings)},
        "label5": {"pair_label": np.where(np.arange(len(f.pair_label)) == 0, 5, f.pair_label)},
        "strings": {"embeddings": f.embeddings.astype(str)},
        "complex": {"quality": f.quality.astype(np.complex64)},
        "quality2d": {"quality": np.stack([f.quality, f.quality], axis=1)},
        "template_floats": {"templates": f.templates + 0.5},
    }[what]
    path = _raw_ijb_file(tmp_path / "f.npz", f, **override)
    with pytest.raises(FormatError, match=needle) as info:
        load_ijb_features(path)
    assert "\n" not in str(info.value) and "f.npz" in str(info.value)
    assert load_ijb_features(save_ijb_features(tmp_path / "ok.npz", f)).embeddings.shape == f.embeddings.shape


def test_nan_embeddings_of_a_fresh_ijb_run_are_warned_about(meta) -> None:
    f = _ijb(meta)
    f.embeddings[5] = np.nan
    result = evaluate_ijb(f, Pooling(flip=False))
    assert any("NaN or infinite" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("what", "needle"),
    [
        ("quality2d", "quality values must be 1-D"),
        ("complex", "embeddings holds complex numbers"),
        ("issame5", "issame holds 5"),
    ],
)
def test_bin_features_use_the_same_checks(tmp_path: Path, what: str, needle: str) -> None:
    rng = np.random.default_rng(0)
    emb, quality, issame = rng.normal(size=(8, 4)), rng.uniform(size=8), np.array([1, 0, 1, 0])
    arrays = {"embeddings": emb, "quality": quality, "issame": issame, "name": np.array("s")}
    arrays.update(
        {
            "quality2d": {"quality": np.stack([quality, quality], 1)},
            "complex": {"embeddings": emb.astype(np.complex128)},
            "issame5": {"issame": np.array([1, 5, 0, 0])},
        }[what]
    )
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(FormatError, match=needle):
        load_features(tmp_path / "b.npz")
    good = save_features(tmp_path / "ok.npz", FeatureSet("s", emb, issame.astype(bool), quality))
    assert load_features(good).embeddings.shape == (8, 4)


def _npz_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npz whose one member's header claims ``shape`` float32 but holds 16 bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = shape
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("embeddings.npy", buffer.getvalue() + b"\0" * 16)
    return path


def test_npz_size_bombs_are_refused_before_allocating(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(FormatError, match="declares .* GiB but holds"):
        read_npz(_npz_declaring(tmp_path / "big.npz", (100_000, 1_000_000)))  # 373 GiB
    monkeypatch.setattr(feature_checks, "NPZ_SLACK", 1 << 20)  # the real slack is 256 MiB
    np.savez_compressed(tmp_path / "zeros.npz", embeddings=np.zeros((2_000_000, 4), np.float32))
    with pytest.raises(FormatError, match="zip bomb"):
        load_features(tmp_path / "zeros.npz")
    with pytest.raises(FormatError, match="zip bomb"):
        load_ijb_features(tmp_path / "zeros.npz")
