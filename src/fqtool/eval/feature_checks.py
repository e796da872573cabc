"""One place that decides whether saved features can be trusted, for pair sets (``.bin``) and IJB alike.

* :func:`read_npz`: the arrays of a features ``.npz`` without a zip bomb or a header declaring hundreds
  of GiB filling memory: each member's declared size must agree with the zip directory, the whole must
  be a plausible expansion of the file, no object arrays (``allow_pickle=False``).
* :func:`check_array` / :func:`check_finite` / :func:`check_pair_labels`: real numbers of the expected
  shape (no strings, no complex numbers, quality of shape (N,), not (N, 2)), finite values, pair labels
  0/1 only. The ``.bin`` features (:mod:`fqtool.eval.features`) and the IJB features
  (:mod:`fqtool.eval.ijb`) both call :func:`validate_pair_features` / :func:`validate_ijb_features`.
* :func:`finite_warning`: the warning the ``.bin`` protocol gives for NaN/inf embeddings, for IJB too.
* :func:`resume_key`: what a resumable embedding (``F.parts/``) is keyed by: the model's *content* (a
  hash of its weights, not the file name: every training run writes ``model.safetensors``) and every
  option that changes the embeddings.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fqtool.errors import FormatError

__all__ = [
    "MAX_NPZ_EXPANSION",
    "check_array",
    "check_finite",
    "check_pair_labels",
    "chunk_is_usable",
    "finite_warning",
    "model_fingerprint",
    "read_npz",
    "resume_key",
    "validate_ijb_features",
    "validate_pair_features",
]

#: A features .npz may expand to at most this many times its size (plus :data:`NPZ_SLACK` bytes):
#: float embeddings hardly compress, so only a bomb goes beyond.
MAX_NPZ_EXPANSION = 64
NPZ_SLACK = 256 << 20


# ------------------------------------------------------------------------------------------ reading


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, checked before it is read; anything odd is one :class:`FormatError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if m.filename.endswith(".npy")]
            _check_declared(archive, members, size, path)
            return {m.filename[:-4]: _read_member(archive, m) for m in members}
    except zipfile.BadZipFile:
        if path.is_file() and path.read_bytes()[:6] == b"\x93NUMPY":
            raise FormatError("is one array (.npy), not a features .npz written by --save-features",
                              path) from None
        raise FormatError("not a features .npz (not a zip archive)", path) from None
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zlib.error, KeyError,
            SyntaxError, TypeError, OverflowError, MemoryError) as exc:  # what numpy/zipfile raise on damage
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"not a features .npz ({text})", path) from None


def _check_declared(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], size: int, path: Path) -> None:
    limit = MAX_NPZ_EXPANSION * size + NPZ_SLACK
    total = sum(m.file_size for m in members)
    if total > limit:
        raise FormatError(f"its arrays would take {total / 2**30:.1f} GiB unpacked from a "
                          f"{size / 2**20:.1f} MiB file (a zip bomb?); refused", path)
    for member in members:
        with archive.open(member) as handle:
            version = np.lib.format.read_magic(handle)
            shape, _, dtype = _header(handle, version)
            header_bytes = handle.tell() if handle.seekable() else 0
        if dtype.hasobject:
            raise FormatError(f"array {member.filename[:-4]!r} holds Python objects; refused", path)
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if header_bytes and declared != member.file_size - header_bytes:
            raise FormatError(f"array {member.filename[:-4]!r} declares {declared / 2**30:.3g} GiB but holds "
                              f"{member.file_size} bytes; the file is damaged", path)


def _header(handle, version):  # noqa: ANN001, ANN202 - numpy's own reader types
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> np.ndarray:
    with archive.open(member) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


# ------------------------------------------------------------------------------------------ checks


def check_array(key: str, values: object, path: str | Path | None, *, ndim: int | None = None,
                rows: int | None = None, integer: bool = False) -> np.ndarray:
    """``values`` as an array of real numbers (booleans, integers, floats; integers only with
    ``integer``) of ``ndim`` dimensions and ``rows`` rows."""
    array = np.asarray(values)
    kind = array.dtype.kind
    allowed = "biu" if integer else "biuf"
    if kind not in allowed:
        what = {"c": "complex numbers", "U": "text", "S": "bytes", "O": "Python objects"}.get(kind,
                                                                                            str(array.dtype))
        need = "integers" if integer else "real numbers"
        raise FormatError(f"{key} holds {what}, not {need}", path)
    if ndim is not None and array.ndim != ndim:
        raise FormatError(f"{key} must be {ndim}-D, got shape {array.shape}", path)
    if rows is not None and len(array) != rows:
        raise FormatError(f"{len(array)} {key} for {rows} images", path)
    return array


def check_finite(key: str, values: np.ndarray | None, path: str | Path | None) -> None:
    """NaN/inf rows would silently count as wrong pairs and make XNorm NaN: name the first one."""
    if values is None:
        return
    values = check_array(key, values, path)
    if not len(values):
        return
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise FormatError(
            f"{key}: {len(bad)} of {len(values)} rows are NaN or infinite (first: image {bad[0]}); "
            "the model that wrote them is broken", path,
        )


def check_pair_labels(labels: object, path: str | Path | None, key: str = "pair_label") -> np.ndarray:
    """Pair labels as booleans; anything but 0/1 (true/false) is refused."""
    array = check_array(key, labels, path, ndim=1, integer=True)
    odd = np.flatnonzero((array != 0) & (array != 1))
    if len(odd):
        raise FormatError(f"{key} holds {array[odd[0]].item()!r} (pair {odd[0]}); labels are 0 or 1", path)
    return array.astype(bool)


def finite_warning(embeddings: np.ndarray) -> str | None:
    """The warning for NaN/inf embeddings (as the ``.bin`` protocol gives it), or None."""
    bad = ~np.isfinite(np.asarray(embeddings, dtype=np.float64)).reshape(len(embeddings), -1).all(axis=1)
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    return (f"{int(bad.sum())} of {len(bad)} embeddings are NaN or infinite (first: image {first}):"
            " their pairs count as rejected; check the model and its input")


def validate_pair_features(features, path: str | Path | None) -> None:  # noqa: ANN001 - FeatureSet
    """A ``.bin`` features set: 2-D embeddings making the pairs, one quality per image, finite."""
    emb = check_array("embeddings", features.embeddings, path, ndim=2)
    issame = check_pair_labels(np.asarray(features.issame).reshape(-1), path, "issame")
    if len(emb) != 2 * len(issame):
        raise FormatError(f"{len(emb)} embeddings do not make {len(issame)} pairs", path)
    if len(emb) == 0:
        raise FormatError("holds no pairs to evaluate", path)
    check_array("quality values", features.quality, path, ndim=1, rows=len(emb))
    _check_flip(features.embeddings_flip, emb.shape, path)
    for key, values in (("embeddings", emb), ("embeddings_flip", features.embeddings_flip),
                        ("quality", features.quality)):
        check_finite(key, values, path)


def validate_ijb_features(f, path: str | Path | None) -> None:  # noqa: ANN001 - IjbFeatures
    """An IJB features set: the checks of :func:`validate_pair_features` plus the template lists."""
    emb = check_array("embeddings", f.embeddings, path, ndim=2)
    n = len(emb)
    for key in ("quality", "detector_scores"):
        check_array(key, getattr(f, key), path, ndim=1, rows=n)
    for key in ("templates", "medias"):
        check_array(key, getattr(f, key), path, ndim=1, rows=n, integer=True)
    if len(np.asarray(f.images)) != n:
        raise FormatError(f"{len(np.asarray(f.images))} images for {n} images", path)
    t1 = check_array("pair_t1", f.pair_t1, path, ndim=1, integer=True)
    t2 = check_array("pair_t2", f.pair_t2, path, ndim=1, integer=True)
    labels = check_pair_labels(f.pair_label, path)
    if not len(t1) == len(t2) == len(labels):
        raise FormatError("pair_t1, pair_t2 and pair_label differ in length", path)
    _check_flip(f.embeddings_flip, emb.shape, path)
    for key, values in (("embeddings", emb), ("embeddings_flip", f.embeddings_flip), ("quality", f.quality),
                        ("detector_scores", f.detector_scores)):
        check_finite(key, values, path)


def _check_flip(flip: np.ndarray | None, shape: tuple, path: str | Path | None) -> None:
    if flip is not None and check_array("embeddings_flip", flip, path).shape != shape:
        raise FormatError("embeddings_flip does not have the shape of embeddings", path)


def chunk_is_usable(arrays: Mapping[str, np.ndarray], rows: int) -> bool:
    """A finished chunk of ``F.parts/`` may be reused: every array has ``rows`` rows of real numbers and
    the embeddings are finite (a NaN chunk is embedded again, and reported if the model gives NaN again)."""
    if "embeddings" not in arrays:
        return False
    for value in arrays.values():
        value = np.asarray(value)
        if value.ndim == 0 or len(value) != rows or value.dtype.kind not in "biuf":
            return False
    return all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for k, v in arrays.items()
               if k.startswith("embeddings") or k == "quality")


# ------------------------------------------------------------------------------------------ resume


def model_fingerprint(model: object) -> str:
    """SHA-256 of what a model computes with: its parameters and buffers (names, shapes, dtypes, bytes)
    for a torch module, the graph file for an ONNX model. Two files with one name differ; one model
    under two names does not; a model with neither gets a key no later run matches."""
    network = getattr(model, "network", model)
    digest = hashlib.sha256()
    state = getattr(network, "state_dict", None)
    if callable(state):
        import torch

        for name, tensor in sorted(state().items()):
            array = tensor.detach().cpu().contiguous().view(-1)
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
            if array.numel():
                digest.update(array.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
    source = getattr(network, "path", None) or getattr(model, "path", None)
    if source is not None and Path(source).is_file():
        from fqtool.fsutil import sha256_file

        return sha256_file(source)
    # Nothing to hash (a custom callable): a key that never matches another process's, so its parts are
    # never reused (safe: they are embedded again).
    return f"unhashable:{type(model).__name__}:{os.getpid()}:{id(model)}"


def resume_key(model: object, **options: object) -> dict:
    """The manifest of a resumable embedding run: the model's content hash plus every option that
    changes the embeddings (set, image count, chunk size, flip, precision, input size, alignment…)."""
    preprocess = getattr(model, "preprocess", None)
    key = {"model_sha256": model_fingerprint(model), **{k: _plain(v) for k, v in options.items()}}
    if preprocess is not None:
        key["preprocess"] = _plain(getattr(preprocess, "__dict__", str(preprocess)))
    return key


def _plain(value: object) -> object:
    """A JSON-comparable form (tuples become lists, numpy scalars numbers, other objects their repr)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
