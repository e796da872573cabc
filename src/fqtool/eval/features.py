"""Saved per-image features of a verification set (``.npz``), so protocols and curves re-run without a model.

Keys (plain ``np.savez_compressed``, loaded with ``allow_pickle=False``):

* ``embeddings`` (N × D float32): raw embeddings of the images as stored (no flip, not normalised);
* ``embeddings_flip`` (N × D, optional): raw embeddings of the horizontally flipped images;
* ``norms`` (N,): L2 norms of ``embeddings``; ``quality`` (N,): the model's quality (head or norm);
* ``issame`` (N/2,) bool; ``name``: the set's name; ``meta``: a JSON string (arch, weights file name,
  quality method, fqtool version...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fqtool.errors import FormatError
from fqtool.fsutil import atomic_path

if TYPE_CHECKING:
    from fqtool.models.face_model import EmbeddingModel

FORMAT_VERSION = 1


@dataclass
class FeatureSet:
    """Per-image outputs for one verification set, row-aligned with its images."""

    name: str
    embeddings: np.ndarray
    issame: np.ndarray
    quality: np.ndarray
    embeddings_flip: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def norms(self) -> np.ndarray:
        return np.linalg.norm(np.asarray(self.embeddings, dtype=np.float64), axis=1)

    @property
    def has_flip(self) -> bool:
        return self.embeddings_flip is not None

    def verification_inputs(self, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings, xnorm_norms)`` for a protocol: with flip ``e + e_flip`` and both lists' norms."""
        if not flip:
            return self.embeddings, self.norms
        if self.embeddings_flip is None:
            raise FormatError(
                "these features have no flipped embeddings; use --no-flip", self.meta.get("path")
            )
        flip_norms = np.linalg.norm(np.asarray(self.embeddings_flip, dtype=np.float64), axis=1)
        summed = np.asarray(self.embeddings, np.float64) + np.asarray(self.embeddings_flip, np.float64)
        return summed, np.concatenate([self.norms, flip_norms])

    def quality_method(self) -> str:
        return str(self.meta.get("quality_method", "model"))


def save_features(path: str | Path, features: FeatureSet) -> Path:
    """Write ``features`` to ``path`` atomically (``.npz`` added when missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = {
        "embeddings": np.asarray(features.embeddings, dtype=np.float32),
        "norms": features.norms.astype(np.float32),
        "quality": np.asarray(features.quality, dtype=np.float32).reshape(-1),
        "issame": np.asarray(features.issame, dtype=bool).reshape(-1),
        "name": np.array(features.name),
        "meta": np.array(json.dumps({**features.meta, "format_version": FORMAT_VERSION}, sort_keys=True)),
    }
    if features.embeddings_flip is not None:
        arrays["embeddings_flip"] = np.asarray(features.embeddings_flip, dtype=np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_features(path: str | Path) -> FeatureSet:
    """Read a file written by :func:`save_features`; anything else is a :class:`FormatError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FormatError("features file not found", path)
    from fqtool.eval.feature_checks import check_pair_labels, read_npz  # h6: checked reading (25.2/11)

    arrays = read_npz(path)
    missing = [k for k in ("embeddings", "issame", "quality", "name") if k not in arrays]
    if missing:
        raise FormatError(f"not an fqtool features file (missing {', '.join(missing)})", path)
    features = FeatureSet(
        name=str(arrays["name"]),
        embeddings=arrays["embeddings"],
        issame=check_pair_labels(arrays["issame"].reshape(-1), path, "issame"),
        quality=arrays["quality"],
        embeddings_flip=arrays.get("embeddings_flip"),
        meta=_meta(arrays.get("meta"), path),
    )
    _validate(features, path)
    return features


def _meta(raw: np.ndarray | None, path: Path) -> dict:
    if raw is None:
        return {"path": path.name}
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError:
        raise FormatError("its 'meta' entry is not JSON", path) from None
    return {**meta, "path": path.name} if isinstance(meta, dict) else {"path": path.name}


def _validate(features: FeatureSet, path: Path) -> None:
    from fqtool.eval.feature_checks import check_finite, validate_pair_features  # the one validation place

    validate_pair_features(features, path)
    emb = features.embeddings
    if emb.ndim != 2:
        raise FormatError(f"embeddings must be 2-D, got shape {emb.shape}", path)
    if len(emb) != 2 * len(features.issame):
        raise FormatError(f"{len(emb)} embeddings do not make {len(features.issame)} pairs", path)
    if len(emb) == 0:
        raise FormatError("holds no pairs to evaluate", path)
    if len(features.quality) != len(emb):
        raise FormatError(f"{len(features.quality)} quality values for {len(emb)} images", path)
    if features.embeddings_flip is not None and features.embeddings_flip.shape != emb.shape:
        raise FormatError("embeddings_flip does not have the shape of embeddings", path)
    for key, values in (("embeddings", emb), ("embeddings_flip", features.embeddings_flip),
                        ("quality", features.quality)):
        check_finite(key, values, path)


def extract_features(
    model: EmbeddingModel,
    images,
    issame: np.ndarray,
    *,
    name: str,
    flip: bool = True,
    device: str = "cpu",
    batch_size: int = 64,
    on_batch=None,
    meta: dict | None = None,
) -> FeatureSet:
    """Embed a decoded verification set (RGB uint8 tensor 2P×3×H×W) with ``model``.

    The plain images give ``embeddings``, ``quality`` and norms; with ``flip`` the horizontally flipped
    images (:func:`~fqtool.eval.embed.embed_images`' flip) give ``embeddings_flip`` (their sum is
    insightface's ``e + e_flip``).
    """
    from fqtool.eval.embed import embed_images

    out = embed_images(model, images, device=device, batch_size=batch_size, flip=flip, on_batch=on_batch)
    embeddings = out.unflipped if flip else out.embeddings
    info = {
        "quality_method": model.quality_method,
        "arch": model.info.arch,
        **(meta or {}),
    }
    return FeatureSet(name, embeddings, np.asarray(issame, bool), out.quality, out.flipped, info)
