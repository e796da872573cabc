"""Label-free face image quality for a set of images: the core of ``fqtool score``.

``score_dataset`` runs a model over a :class:`~fqtool.data.datasets.FaceImageDataset` (a folder, a list
file or a ``.rec``) and returns, row-aligned: stable names, raw quality (embedding norm or head
probability), the 0–100 calibrated quality, the embedding norm, optional labels and embeddings, and the
images that could not be read (excluded, never fatal).

0–100 scale: ``100 · clip((q − low) / (high − low), 0, 1)``. ``low``/``high`` come from the checkpoint's
calibration when it was made for the method in use, else the defaults in :data:`DEFAULT_CALIBRATION`
(MagFace's magnitude range [l_a, u_a] = [10, 110] for ``norm``; [0, 1] for ``head``; [1, 3] for
``crfiqa``, the certainty ratio CCS/NNCCS of a trained model; for ``serfiq``
[2·σ(−√2), 1]: 0 when the dropout passes scatter like unrelated faces, 100 when they all agree).

``serfiq`` (training-free, any registered or imported torch model) is computed by :mod:`fqtool.eval.serfiq`.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fqtool.errors import BadInputError, FqtoolError
from fqtool.eval.embed import Embeddings, embed_images
from fqtool.eval.methods import beside_runner
from fqtool.eval.serfiq import SerfiqOptions
from fqtool.fsutil import atomic_open, atomic_path
from fqtool.models.face_model import EmbeddingModel, QualityCalibration
from fqtool.quality_methods import BY_NAME, TABLE, names_for

#: Calibration used when a checkpoint has none for the method in use (from the quality-method table).
DEFAULT_CALIBRATION: dict[str, QualityCalibration] = {
    m.name: QualityCalibration(*m.calibration) for m in TABLE if m.calibration is not None
}
METHODS = names_for("score")


@dataclass
class ScoreResult:
    """Per-image results (row-aligned) plus the run's facts."""

    names: list[str]
    quality: np.ndarray
    quality_100: np.ndarray
    norms: np.ndarray
    labels: np.ndarray | None
    embeddings: np.ndarray | None
    method: str
    calibration: QualityCalibration
    bad: list[str] = field(default_factory=list)
    total: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # the input's one-line warnings (no face, not aligned)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def order(self, sort: str = "none") -> np.ndarray:
        """Row order: ``none`` (input order), ``asc`` (worst first) or ``desc`` (best first)."""
        if sort == "none":
            return np.arange(len(self))
        order = np.argsort(self.quality, kind="stable")
        return order[::-1].copy() if sort == "desc" else order

    def summary(self) -> dict:
        q = self.quality_100
        return {
            "images": len(self),
            "unreadable": len(self.bad),
            "mean_quality_100": float(q.mean()) if len(q) else float("nan"),
            "median_quality_100": float(np.median(q)) if len(q) else float("nan"),
            "mean_quality": float(self.quality.mean()) if len(q) else float("nan"),
            "median_quality": float(np.median(self.quality)) if len(q) else float("nan"),
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "method": self.method,
            "calibration": self.calibration.to_dict(),
        }


# ----------------------------------------------------------------------------------------------- core


class _Guarded(Dataset):
    """Wraps a dataset: an unreadable image becomes ``(zeros, label, False)`` instead of an error."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        try:
            image, label = self.dataset[i]
        except BadInputError:
            h, w = self.dataset.size or (112, 112)
            return torch.zeros(3, h, w, dtype=torch.uint8), -1, False
        return image, label, True


def open_input(path: str | Path, size: tuple[int, int] | None):
    """A dataset for ``fqtool score``'s INPUT: a single image file, or whatever ``open_dataset`` opens."""
    from fqtool.data.datasets import FileImageDataset, open_dataset
    from fqtool.data.decode import IMAGE_EXTENSIONS

    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return FileImageDataset(path, path.parent, [path.name], np.full(1, -1), 0, size=size)
    return open_dataset(path, size=size, skip_bad=False, include_loose=True)


def choose_calibration(model: EmbeddingModel, method: str, default_method: str) -> QualityCalibration:
    """The checkpoint's calibration if it was made for ``method``, else the per-method default."""
    saved = model.info.calibration
    if saved is not None and method == default_method:
        return saved
    return DEFAULT_CALIBRATION[method]


def set_method(model: EmbeddingModel, method: str) -> tuple[str, str]:
    """Apply ``auto|norm|head|crfiqa|serfiq`` to ``model``; return ``(method in use, the model's own
    method)``. ``head`` is the model's own head, reported as ``head`` (EQFace) or ``crfiqa``.

    ``serfiq`` leaves the model alone (it is computed beside the model's forward pass).
    """
    if method not in METHODS:
        raise FqtoolError(f"unknown quality method {method!r}; use {', '.join(METHODS)}")
    own = model.quality_method
    runner = beside_runner(method)
    if BY_NAME[method].computed_by_model:
        model.set_quality_method(method)
    elif runner is not None:  # computed beside the model's forward pass (SER-FIQ)
        runner.check_model(model)
        return method, own
    return model.quality_method, own


def _loader(dataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    from fqtool.runtime import loader_workers

    workers = min(loader_workers(workers), -(-len(dataset) // batch_size))  # no idle workers on small inputs
    return DataLoader(
        _Guarded(dataset),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


def score_dataset(
    model: EmbeddingModel,
    dataset,
    *,
    batch_size: int = 256,
    workers: int = 4,
    device: torch.device | str = "cpu",
    method: str = "auto",
    keep_embeddings: bool = False,
    precision: str = "auto",
    serfiq: SerfiqOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ScoreResult:
    """Quality (and embeddings) for every readable image of ``dataset``, in dataset order."""
    device = torch.device(device)
    runner = beside_runner(method) if method in METHODS else None
    if runner is not None:
        runner.check_options(serfiq)
    used, own = set_method(model, method)
    calibration = choose_calibration(model, used, own)
    good_index: list[np.ndarray] = []
    bad_index: list[int] = []

    def batches() -> Iterator[torch.Tensor]:
        start = 0
        from fqtool.data.datasets import guarded_batches  # h6: shared-memory failures in one line (25.11)

        for images, _labels, ok in guarded_batches(_loader(dataset, batch_size, workers, device)):
            ok_np = ok.numpy().astype(bool)
            index = np.arange(start, start + len(ok_np))
            start += len(ok_np)
            bad_index.extend(index[~ok_np].tolist())
            good_index.append(index[ok_np])
            if ok_np.all():
                yield images
            elif ok_np.any():
                yield images[torch.from_numpy(ok_np)]
            if on_progress is not None:
                on_progress(len(ok_np))

    began = time.perf_counter()
    try:
        if runner is not None:
            out = _beside_embeddings(runner, model, batches(), serfiq, device, precision)
        else:
            out = embed_images(model, batches(), device=device, batch_size=batch_size, precision=precision)
    finally:
        model.quality_method = own  # leave the caller's model as it was
    seconds = time.perf_counter() - began
    rows = np.concatenate(good_index) if good_index else np.zeros(0, np.int64)
    labels = np.asarray(getattr(dataset, "labels", np.full(len(dataset), -1)))[rows]
    quality = out.quality.astype(np.float32)
    return ScoreResult(
        names=[dataset.name(int(i)) for i in rows],
        quality=quality,
        quality_100=calibration(torch.from_numpy(quality)).numpy(),
        norms=out.norms.astype(np.float32),
        labels=labels if (labels >= 0).any() else None,
        embeddings=out.embeddings if keep_embeddings else None,
        method=used,
        calibration=calibration,
        bad=[dataset.name(i) for i in bad_index],
        total=len(dataset),
        seconds=seconds,
        notes=list(getattr(dataset, "notes", [])),
    )


def _beside_embeddings(runner, model, batches, options, device, precision: str) -> Embeddings:
    """Embeddings and quality from a method computed beside the forward pass (``runner``: SER-FIQ's)."""
    embeddings, quality = runner.embed_beside(model, batches, options, device=device, precision=precision)
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1) if len(embeddings) else np.zeros(0)
    return Embeddings(embeddings, quality, norms)


def fit_calibration(quality: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0,
                    source: str = "") -> QualityCalibration:
    """A calibration from observed raw qualities: ``low``/``high`` = the given percentiles."""
    quality = np.asarray(quality, dtype=np.float64)
    if quality.size < 2:
        raise FqtoolError("need at least two quality values to fit a calibration")
    low, high = np.percentile(quality, [low_pct, high_pct])
    if high <= low:
        raise FqtoolError("all quality values are equal; cannot fit a 0-100 calibration")
    source = source or f"p{low_pct:g}/p{high_pct:g} of {quality.size} images"
    return QualityCalibration(float(low), float(high), source)


# ----------------------------------------------------------------------------------------------- outputs


def default_output(input_path: str | Path) -> Path:
    """``<input name>_quality.csv`` in the current folder (``data/faces/`` → ``./faces_quality.csv``): not
    beside the input, which is often a data folder the user does not want written into."""
    path = Path(input_path)
    resolved = path.resolve()
    stem = resolved.name if path.is_dir() else resolved.stem
    return Path.cwd() / f"{stem or 'images'}_quality.csv"


def write_csv(result: ScoreResult, path: str | Path, order: np.ndarray | None = None) -> Path:
    """``path,quality,quality_100,norm[,label]`` per image, atomically."""
    path = Path(path)
    order = np.arange(len(result)) if order is None else order
    header = ["path", "quality", "quality_100", "norm"] + (["label"] if result.labels is not None else [])
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in order.tolist():
            row = [
                result.names[i],
                f"{result.quality[i]:.6g}",
                f"{result.quality_100[i]:.2f}",
                f"{result.norms[i]:.4f}",
            ]
            if result.labels is not None:
                row.append(int(result.labels[i]) if result.labels[i] >= 0 else "")
            writer.writerow(row)
    return path


def save_embeddings(result: ScoreResult, path: str | Path, order: np.ndarray | None = None) -> Path:
    """``.npy``: embeddings row-aligned with the CSV; ``.npz``: ``names``, ``embeddings``, ``quality``."""
    if result.embeddings is None:
        raise FqtoolError("embeddings were not kept (score with keep_embeddings=True)")
    path = Path(path)
    order = np.arange(len(result)) if order is None else order
    embeddings = result.embeddings[order].astype(np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if path.suffix.lower() == ".npz":
            np.savez(
                handle,
                names=np.asarray([result.names[i] for i in order.tolist()], dtype=str),
                embeddings=embeddings,
                quality=result.quality[order],
                quality_100=result.quality_100[order],
            )
        else:
            np.save(handle, embeddings)
    return path


def plot_histogram(result: ScoreResult, path: str | Path, title: str = "") -> Path:
    """Histogram of the 0–100 quality (matplotlib, Agg backend), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(result.quality_100, bins=50, range=(0, 100), color="#3b75af")
    ax.set_xlabel(f"quality (0-100, {result.method})")
    ax.set_ylabel("images")
    median = float(np.median(result.quality_100)) if len(result) else 0.0
    ax.axvline(median, color="#c44e52", linestyle="--", label=f"median {median:.1f}")
    ax.legend()
    ax.set_title(title or f"{len(result)} images")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    return path
