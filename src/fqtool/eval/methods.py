"""Several quality methods of one model on the same images, for one ERC/EDC plot.

``norm`` (MagFace magnitude), ``head`` (the model's quality head), ``crfiqa`` (a CR-FIQA regressor)
and ``serfiq`` (SER-FIQ dropout robustness) are computed on the images a
:class:`~fqtool.eval.features.FeatureSet` was embedded from; the features' own quality is reused when it
already is the method asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np

from fqtool.errors import FqtoolError
from fqtool.eval.features import FeatureSet
from fqtool.quality_methods import BY_NAME, HEAD_METHODS, names_for

QUALITY_METHODS = names_for("erc-curve")
#: Methods that need the model and the images (the rest can come from saved features).
NEEDS_MODEL = tuple(m for m in QUALITY_METHODS if BY_NAME[m].needs_images)


def beside_runner(method: str) -> ModuleType | None:
    """The module computing ``method`` beside the model's forward pass (the table's ``beside``, e.g.
    :mod:`fqtool.eval.serfiq`), or ``None`` for a quality the model computes itself (or ``auto``)."""
    beside = BY_NAME[method].beside
    return importlib.import_module(f"{__package__}.{beside}") if beside else None


def check_methods(methods: Sequence[str], have_model: bool) -> list[str]:
    """Validated, de-duplicated methods in the order given."""
    out = list(dict.fromkeys(methods))
    for method in out:
        if method not in QUALITY_METHODS:
            raise FqtoolError(f"unknown quality method {method!r}; use {', '.join(QUALITY_METHODS)}")
        if method in NEEDS_MODEL and not have_model:
            raise FqtoolError(f"--method {method} needs a model (TARGET with --weights), not --features")
    return out


def method_qualities(
    methods: Sequence[str],
    features: FeatureSet,
    *,
    model=None,
    images=None,
    device="cpu",
    batch_size: int = 64,
    serfiq=None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """``{"model:<method>": per-image quality}`` for each method, row-aligned with ``features``."""
    out: dict[str, np.ndarray] = {}
    for method in check_methods(methods, model is not None):
        out[f"model:{method}"] = _quality_of_method(method, features, model, images, device, batch_size,
                                                    serfiq, on_batch)
    return out


def _quality_of_method(method, features, model, images, device, batch_size, serfiq, on_batch) -> np.ndarray:
    """One method's per-image quality: from the features when they hold it, else by running the model."""
    held = _saved_array_holding(method, features.quality_method())
    if held is not None:
        return np.asarray(getattr(features, held), dtype=np.float64)
    if BY_NAME[method].computed_by_model:
        return _head_quality(model, method, images, device, batch_size, on_batch)
    batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    return beside_runner(method).embed_beside(model, batches, serfiq, device=device, on_batch=on_batch)[1]


def _saved_array_holding(method: str, own: str) -> str | None:
    """The features' array (``"norms"``, or ``"quality"``: the model's own quality ``own``) that already
    holds ``method``'s quality (the table's ``saved_in``; ``head`` matches either kind of head), or
    ``None`` when the model must run again."""
    entry = BY_NAME[method]
    if entry.saved_in is not None:
        return entry.saved_in
    if method == own or (entry.head == "any" and own in HEAD_METHODS):
        return "quality"
    return None


def held_quality(method: str, own: str, where: str) -> str:
    """:func:`_saved_array_holding` for features that cannot be recomputed (IJB): one line naming ``where``
    when ``method`` is not held."""
    if method not in QUALITY_METHODS:
        raise FqtoolError(f"unknown quality method {method!r}; use {', '.join(QUALITY_METHODS)}")
    held = _saved_array_holding(method, own)
    if held is not None:
        return held
    raise FqtoolError(f"--method {method} on {where}: its features hold the embedding norms and the model's "
                      f"own quality ({own}) only; score other methods with `fqtool score` on the aligned "
                      "crops and pass them with --scores")


def saved_qualities(methods: Sequence[str], features, where: str) -> dict[str, np.ndarray]:
    """``{"model:<method>": quality}`` from features that keep only the norms and the model's quality."""
    own = features.quality_method()
    out = {}
    for method in dict.fromkeys(methods):
        out[f"model:{method}"] = np.asarray(getattr(features, held_quality(method, own, where)), np.float64)
    return out


def parse_quality_model(text: str) -> tuple[str, str]:
    """``NAME=WEIGHTS`` → ``(name, weights)``; a bare path is named after its file stem."""
    from pathlib import Path

    name, sep, path = text.partition("=")
    if not sep:
        return Path(text).stem, text
    if not name.strip() or not path.strip():
        raise FqtoolError(f"--quality-model wants NAME=WEIGHTS, got {text!r}")
    return name.strip(), path.strip()


def own_quality(model, images, *, device="cpu", batch_size: int = 64, on_batch=None) -> np.ndarray:
    """Another checkpoint's own quality (its norm, head or CR-FIQA score) on the same images."""
    from fqtool.eval.embed import embed_images

    out = embed_images(model, images, device=device, batch_size=batch_size, on_batch=on_batch)
    return out.quality.astype(np.float64)


def _head_quality(model, method, images, device, batch_size, on_batch) -> np.ndarray:
    from fqtool.eval.embed import embed_images

    own = getattr(model, "quality_method", "norm")
    if not hasattr(model, "set_quality_method"):
        raise FqtoolError(f"--method {method} needs a model with a quality head")
    model.set_quality_method(method)
    try:
        out = embed_images(model, images, device=device, batch_size=batch_size, on_batch=on_batch)
    finally:
        model.quality_method = own
    return out.quality.astype(np.float64)
