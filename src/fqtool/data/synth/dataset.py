"""Synthetic data sets: samples (a rendered face plus a drawn degradation) and the writer.

:func:`write_synthetic_dataset` writes a training set in insightface's RecordIO layout, a ``.bin``
verification set of held-out identities, the per-image levels as CSV and a manifest.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fqtool.data.binfile import save_bin
from fqtool.data.recordio import RecordIOWriter, pack_record
from fqtool.data.synth.degrade import CLEAN, DEGRADATION_KINDS, degrade, sample_degradation
from fqtool.data.synth.faces import SIZE, IdentityParams, render_face, sample_identity, to_uint8
from fqtool.errors import FqtoolError
from fqtool.fsutil import atomic_write_text, ensure_dir


def generate_face(
    identity: IdentityParams,
    rng: np.random.Generator,
    *,
    level: float = 0.0,
    kind: str = CLEAN,
    jitter: float = 1.0,
) -> np.ndarray:
    """One aligned face of ``identity``: RGB uint8, 112×112×3, degraded by ``kind`` at ``level``."""
    img = render_face(identity, rng, jitter=jitter)
    if level > 0 and kind != CLEAN:
        img = degrade(img, kind, level, rng)
    return to_uint8(img)


# ------------------------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class SynthSample:
    """One generated image with its class (identity index) and ground-truth degradation."""

    label: int
    image: np.ndarray
    kind: str
    level: float


_TRAIN, _VAL = 0, 1


def identity_params(seed: int, index: int) -> IdentityParams:
    """Identity ``index`` of the universe defined by ``seed`` (training and held-out ids share it)."""
    return sample_identity(np.random.default_rng([seed, 0, index]))


def make_sample(identity: IdentityParams, label: int, rng: np.random.Generator, fraction: float,
                jitter: float = 1.0) -> SynthSample:
    """Draw a degradation (clean with probability ``1 - fraction``) and render one image."""
    kind, level = sample_degradation(rng, fraction)
    image = generate_face(identity, rng, level=level, kind=kind, jitter=jitter)
    return SynthSample(label, image, kind, level)


def iter_train_samples(
    num_identities: int, images_per_identity: int, *, degraded_fraction: float = 0.5, seed: int = 0,
    jitter: float = 1.0,
) -> Iterator[SynthSample]:
    """Training images, class by class; each image has its own random stream (order-independent)."""
    for label in range(num_identities):
        identity = identity_params(seed, label)
        for n in range(images_per_identity):
            rng = np.random.default_rng([seed, 1, _TRAIN, label, n])
            yield make_sample(identity, label, rng, degraded_fraction, jitter)


def iter_val_pairs(
    num_pairs: int,
    *,
    first_identity: int,
    num_identities: int,
    degraded_fraction: float = 0.5,
    seed: int = 0,
    jitter: float = 1.0,
) -> Iterator[tuple[SynthSample, SynthSample, bool]]:
    """Verification pairs over identities ``first_identity .. first_identity + num_identities - 1``.

    Even pairs are same-identity, odd pairs different-identity; both images are fresh renders.
    """
    if num_identities < 2:
        raise FqtoolError("a verification set needs at least 2 held-out identities")
    cache: dict[int, IdentityParams] = {}
    for p in range(num_pairs):
        rng = np.random.default_rng([seed, 2, p])
        same = p % 2 == 0
        a = int(rng.integers(num_identities))
        b = a if same else (a + 1 + int(rng.integers(num_identities - 1))) % num_identities
        pair = []
        for k, idx in enumerate((a, b)):
            label = first_identity + idx
            identity = cache.setdefault(label, identity_params(seed, label))
            rng_k = np.random.default_rng([seed, 1, _VAL, p, k])
            pair.append(make_sample(identity, label, rng_k, degraded_fraction, jitter))
        yield pair[0], pair[1], same


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """RGB uint8 HWC → JPEG bytes (deterministic for a given Pillow build)."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_image(image: np.ndarray, image_format: str = "jpg") -> bytes:
    """RGB uint8 HWC → ``jpg`` (quality 95) or ``png`` bytes."""
    if image_format == "jpg":
        return encode_jpeg(image, JPEG_QUALITY)
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG")
    return buf.getvalue()


# -------------------------------------------------------------------------------------------- writer


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and options of a synthetic data set (validated on construction)."""

    num_identities: int = 24
    images_per_identity: int = 24
    val_identities: int = 10
    val_pairs: int = 200
    degraded_fraction: float = 0.5
    seed: int = 0
    image_format: str = "jpg"
    write_folder: bool = False
    #: Scale of the per-image nuisance (pose, expression, lighting); 1 = the default variation.
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.num_identities < 1 or self.images_per_identity < 1:
            raise FqtoolError("need at least 1 identity and 1 image per identity")
        if self.val_pairs < 0:
            raise FqtoolError("the number of verification pairs cannot be negative")
        if self.val_pairs and self.val_identities < 2:
            raise FqtoolError("a verification set needs at least 2 held-out identities")
        if not 0.0 <= self.degraded_fraction <= 1.0:
            raise FqtoolError(f"degraded fraction must be in [0, 1], not {self.degraded_fraction}")
        if not 0.0 <= self.jitter <= 2.0:
            raise FqtoolError(f"jitter must be in [0, 2], not {self.jitter}")
        if self.image_format not in IMAGE_FORMATS:
            known = ", ".join(IMAGE_FORMATS)
            raise FqtoolError(f"image format must be one of {known}, not {self.image_format!r}")

    @property
    def num_train_images(self) -> int:
        return self.num_identities * self.images_per_identity

    @property
    def total_images(self) -> int:
        """Images to generate: training images plus two per verification pair."""
        return self.num_train_images + 2 * self.val_pairs


@dataclass
class SynthResult:
    """What :func:`write_synthetic_dataset` wrote."""

    out_dir: Path
    config: SynthConfig
    files: list[str]
    degraded_train: int
    degraded_val: int

    @property
    def num_train_images(self) -> int:
        return self.config.num_train_images

    @property
    def num_val_images(self) -> int:
        return 2 * self.config.val_pairs


JPEG_QUALITY = 95
IMAGE_FORMATS = ("jpg", "png")
Progress = Callable[[int], None] | None


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _write_train(out: Path, cfg: SynthConfig, on_progress: Progress) -> tuple[list[list[object]], dict]:
    """``train.rec`` / ``train.idx`` in insightface's layout (and the image folder); returns CSV rows."""
    n, classes = cfg.num_train_images, cfg.num_identities
    rows: list[list[object]] = []
    folder: dict[str, bytes] = {}
    with RecordIOWriter(out / "train.rec", out / "train.idx") as writer:
        writer.write(0, pack_record([float(n + 1), float(n + 1 + classes)], b"", id=0))
        samples = iter_train_samples(
            classes, cfg.images_per_identity, degraded_fraction=cfg.degraded_fraction, seed=cfg.seed,
            jitter=cfg.jitter,
        )
        for key, sample in enumerate(samples, start=1):
            data = encode_image(sample.image, cfg.image_format)
            writer.write(key, pack_record(float(sample.label), data, id=key))
            rows.append([f"train:{key}", sample.label, f"{sample.level:.6f}", sample.kind])
            if cfg.write_folder:
                n_in_class = (key - 1) % cfg.images_per_identity
                folder[f"{sample.label:04d}/{n_in_class:04d}.{cfg.image_format}"] = data
            if on_progress:
                on_progress(1)
        for label in range(classes):
            start = 1 + label * cfg.images_per_identity
            key = n + 1 + label
            span = [float(start), float(start + cfg.images_per_identity)]
            writer.write(key, pack_record(span, b"", id=key))
    return rows, folder


def _write_val(out: Path, cfg: SynthConfig, on_progress: Progress) -> list[list[object]]:
    """``val.bin`` (insightface pickle) from held-out identities; returns the quality CSV rows."""
    images: list[bytes] = []
    issame: list[bool] = []
    rows: list[list[object]] = []
    pairs = iter_val_pairs(cfg.val_pairs, first_identity=cfg.num_identities,
                           num_identities=cfg.val_identities, degraded_fraction=cfg.degraded_fraction,
                           seed=cfg.seed, jitter=cfg.jitter)
    for first, second, same in pairs:
        for sample in (first, second):
            rows.append([len(images), f"{sample.level:.6f}", sample.kind, f"{1.0 - sample.level:.6f}"])
            images.append(encode_image(sample.image, cfg.image_format))
            if on_progress:
                on_progress(1)
        issame.append(same)
    save_bin(out / "val.bin", images, issame)
    return rows


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    """``images/<class>/<n>.<ext>``, built in a temporary folder and renamed into place."""
    final = out / "images"
    tmp = Path(tempfile.mkdtemp(prefix=".images.", suffix=".tmp", dir=out))
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".images.", suffix=".old", dir=out))
            os.replace(final, old / "images")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest(cfg: SynthConfig, files: list[str], degraded_train: int, degraded_val: int) -> dict:
    from fqtool._version import __version__

    return {
        "generator": "fqtool.data.synth",
        "fqtool_version": __version__,
        "seed": cfg.seed,
        "image_size": [SIZE, SIZE],
        "image_format": cfg.image_format,
        "jpeg_quality": JPEG_QUALITY if cfg.image_format == "jpg" else None,
        "train": {
            "num_identities": cfg.num_identities,
            "images_per_identity": cfg.images_per_identity,
            "num_images": cfg.num_train_images,
            "degraded_images": degraded_train,
            "layout": "insightface: record 0 header [first identity key, end], images 1..N, identities",
        },
        "val": {
            "identities": [cfg.num_identities, cfg.num_identities + cfg.val_identities]
            if cfg.val_pairs else [],
            "num_pairs": cfg.val_pairs,
            "num_images": 2 * cfg.val_pairs,
            "degraded_images": degraded_val,
        },
        "degraded_fraction": cfg.degraded_fraction,
        "jitter": cfg.jitter,
        "degradation_kinds": list(DEGRADATION_KINDS),
        "files": files,
    }


def write_synthetic_dataset(
    out_dir: str | Path, config: SynthConfig | None = None, *, on_progress: Progress = None, **options
) -> SynthResult:
    """Write a synthetic face data set to ``out_dir`` (deterministic for a given ``seed``).

    Files: ``train.rec``/``train.idx``/``property`` (insightface layout), ``val.bin`` (held-out identities,
    half same-identity pairs), ``degradations.csv`` (``name,label,level,kind`` per training image),
    ``val_quality.csv`` (``index,level,kind,quality`` per ``val.bin`` image, quality = 1 - level),
    ``synth.json`` and, with ``write_folder``, ``images/<class>/<n>.<ext>``. ``on_progress(n)`` is called
    as images are generated (:attr:`SynthConfig.total_images` in all).

    Sizes and options come from ``config`` or, field by field, from ``options`` (the fields of
    :class:`SynthConfig`, e.g. ``num_identities=24, seed=3``), so the defaults live in one place.
    """
    cfg = config if config is not None else SynthConfig(**options)
    out = ensure_dir(out_dir)
    train_rows, folder = _write_train(out, cfg, on_progress)
    atomic_write_text(out / "property", f"{cfg.num_identities},{SIZE},{SIZE}")
    atomic_write_text(out / "degradations.csv", _csv_text(("name", "label", "level", "kind"), train_rows))
    files = ["train.rec", "train.idx", "property", "degradations.csv"]
    val_rows: list[list[object]] = []
    if cfg.val_pairs:
        val_rows = _write_val(out, cfg, on_progress)
        atomic_write_text(out / "val_quality.csv", _csv_text(("index", "level", "kind", "quality"), val_rows))
        files += ["val.bin", "val_quality.csv"]
    if cfg.write_folder:
        _write_folder(out, folder)
        files.append("images")
    degraded_train = sum(row[3] != CLEAN for row in train_rows)
    degraded_val = sum(row[2] != CLEAN for row in val_rows)
    files.append("synth.json")
    manifest = _manifest(cfg, files, degraded_train, degraded_val)
    atomic_write_text(out / "synth.json", json.dumps(manifest, indent=1) + "\n")
    return SynthResult(out, cfg, files, degraded_train, degraded_val)
