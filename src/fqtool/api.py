"""The Python API: open a model once, then embed and score images from a notebook or a script.

>>> import fqtool
>>> model = fqtool.load_model("runs/magface/model.safetensors", device="cpu")
>>> model.quality(["a.jpg", "b.jpg"])          # raw quality per image (norm or head score)
>>> model.score("faces/").quality_100          # calibrated 0-100, for a folder, list file or .rec

``images`` may be a path to an image file, a list of paths, a PIL image, an RGB uint8 ``H×W×3`` numpy
array, a batch (``N×H×W×3`` uint8 array, ``N×3×H×W`` uint8 tensor) or a list mixing these. Images of
another size are resized to the model's input size; they must already be aligned faces.

``fqtool score``, ``verify`` and ``erc-curve`` run through this module, so a notebook and the CLI give
the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fqtool.api_inputs import (
    _batch_size,
    _InMemory,
    _is_collection,
    _names,
    _not_aligned_note,
    _path_arg,
    read_images,
)
from fqtool.errors import FqtoolError
from fqtool.eval.embed import embed_images
from fqtool.eval.features import FeatureSet, extract_features
from fqtool.eval.scoring import ScoreResult, open_input, score_dataset, set_method
from fqtool.models.loading import load_model as _open_network
from fqtool.models.loading import resolve_weights
from fqtool.runtime import resolve_device

__all__ = ["QualityModel", "align_faces", "erc_curve", "load_model", "read_images", "verify"]


def _model_arg(model: Any) -> QualityModel:
    if not isinstance(model, QualityModel):
        raise FqtoolError(f"give a model from fqtool.load_model(...), not a {type(model).__name__} "
                          f"({str(model)[:40]!r})")
    return model


# ----------------------------------------------------------------------------------------------- model


class QualityModel:
    """A face recognition model with its quality: ``embed``, ``quality``, ``score`` (see the module doc).

    ``network`` is the underlying model (a torch ``FaceModel`` or an ONNX Runtime model), ``device``
    where it runs, ``weights`` the file it came from.
    """

    def __init__(self, network: Any, *, device: torch.device, weights: Path | None = None) -> None:
        self.network, self.device, self.weights = network, device, weights

    def __repr__(self) -> str:
        arch = getattr(getattr(self.network, "info", None), "arch", type(self.network).__name__)
        return f"QualityModel({arch}, quality={self.quality_method}, device={self.device})"

    @property
    def preprocess(self):
        return self.network.preprocess

    @property
    def size(self) -> tuple[int, int]:
        """Input size (H, W); other images are resized to it."""
        return tuple(self.network.preprocess.size)

    @property
    def embedding_size(self) -> int:
        return int(self.network.embedding_size)

    @property
    def quality_method(self) -> str:
        """``norm`` (MagFace: the embedding's magnitude), ``head`` (EQFace's head) or ``crfiqa`` (CR-FIQA's
        regressor)."""
        return str(getattr(self.network, "quality_method", "norm"))

    def embed(self, images: Any, *, normalize: bool = False, flip: bool = False,
              batch_size: int = 64) -> np.ndarray:
        """Embeddings, ``N×D`` float32 (raw unless ``normalize``; ``flip`` adds the mirrored image's)."""
        batch_size = _batch_size(batch_size)
        batch = read_images(images, self.size)
        out = embed_images(self.network, batch, device=self.device, batch_size=batch_size, flip=flip)
        emb = out.embeddings.astype(np.float32)
        if normalize:
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb

    def quality(self, images: Any, *, method: str = "auto", batch_size: int = 64) -> np.ndarray | float:
        """Raw quality per image, float32 (the norm for ``norm``, the head's score for ``head``); a plain
        ``float`` for one image (a path, a PIL image or one ``H×W×C`` array)."""
        quality = self.score(images, method=method, batch_size=batch_size).quality
        return float(quality[0]) if _is_single_image(images) and len(quality) == 1 else quality

    def open(self, source: str | Path):
        """A folder (recursive), list file, ``.rec``, insightface folder or one image, as a dataset.

        Its ``notes`` start with a warning when the images are not the model's size (photos, not aligned
        faces: use :meth:`aligned` or ``score(..., align=True)``)."""
        from fqtool.align.pipeline import first_off_size

        dataset = open_input(source, size=self.size)
        found = first_off_size(dataset, self.size)
        if found is not None:
            dataset.notes = [_not_aligned_note(found, self.size), *getattr(dataset, "notes", [])]
        return dataset

    def aligned(self, source: str | Path, *, detector: str | Path | None = None, workers: int = 1,
                on_progress: Callable[[int], None] | None = None):
        """Photos detected and aligned (largest face each) into a temporary folder, as a dataset named
        after the photos; the folder goes when the dataset does. ``notes``: the photos with no face."""
        import tempfile

        from fqtool.align.datasets import aligned_dataset, missed_faces_note
        from fqtool.align.pipeline import crop_size_for

        workdir = tempfile.TemporaryDirectory(prefix="fqtool-align-")
        dataset, run = aligned_dataset(source, workdir.name, crop_size_for(self.size), detector=detector,
                                       workers=max(1, workers), on_progress=on_progress,
                                       margin=self.preprocess.margin)
        dataset.workdir = workdir  # TemporaryDirectory deletes the folder once the dataset is gone
        note = missed_faces_note(run.no_face + [s for s, _ in run.unreadable], run.images, "not scored")
        dataset.notes = [note] if note else []
        if not len(dataset):
            raise FqtoolError("no face found in any image", source)
        return dataset

    def score(
        self,
        images: Any,
        *,
        method: str = "auto",
        batch_size: int = 64,
        workers: int = 0,
        keep_embeddings: bool = False,
        on_progress: Callable[[int], None] | None = None,
        align: bool = False,
        detector: str | Path | None = None,
        progress: bool = False,
        **method_options: Any,
    ) -> ScoreResult:
        """Quality (raw and 0-100), norms and optionally embeddings, row-aligned with the images.

        ``images``: anything :func:`read_images` takes, a dataset from :meth:`open`, or a folder, list
        file or ``.rec`` path. Unreadable images of a folder/list/.rec are skipped and listed in ``bad``.
        ``align``: ``images`` are photos (a folder, list file or image path) to detect and align first
        (:meth:`aligned`, ``detector`` its weights). ``method_options`` go to
        :func:`fqtool.eval.scoring.score_dataset` (options of a quality method).
        ``on_progress(n)`` is called with the number of images each batch finished; ``progress=True``
        shows a progress bar on stderr instead.
        """
        batch_size = _batch_size(batch_size)
        if align:
            dataset = self.aligned(images, detector=detector, workers=workers)
        elif _is_collection(images):
            dataset = self.open(images)
        elif hasattr(images, "name") and hasattr(images, "__getitem__"):
            dataset = images
        else:
            batch = read_images(images, self.size)
            dataset = _InMemory(batch, _names(images, len(batch)))
        with _progress_bar("score", len(dataset), progress and on_progress is None) as bar:
            return score_dataset(
                self.network, dataset, batch_size=batch_size, workers=workers, device=self.device,
                method=method, keep_embeddings=keep_embeddings, on_progress=on_progress or bar,
                **method_options,
            )

    def calibrate(self, images: Any, *, percentiles: tuple[float, float] = (1.0, 99.0), method: str = "auto",
                  output: str | Path | None = None, batch_size: int = 64, workers: int = 0,
                  on_progress: Callable[[int], None] | None = None):
        """Fit the 0-100 scale to ``images`` (a representative set: p1 → 0, p99 → 100 by default) and use it
        from now on; with ``output``, also write it into a copy of the weights (``.safetensors``/``.onnx``).
        Returns the :class:`~fqtool.eval.calibrate.CalibrationFit`."""
        from fqtool.eval.calibrate import (
            apply_calibration,
            check_writable,
            fit_model_calibration,
            write_calibrated,
        )

        if output is not None:
            if self.weights is None:
                raise FqtoolError("this model was not opened from a file; there are no weights to copy")
            check_writable(self.network, self.weights, Path(output))
        if _is_collection(images):
            dataset = self.open(images)
        elif hasattr(images, "name") and hasattr(images, "__getitem__"):
            dataset = images
        else:
            batch = read_images(images, self.size)
            dataset = _InMemory(batch, _names(images, len(batch)))
        fit = fit_model_calibration(self.network, dataset, low_pct=percentiles[0], high_pct=percentiles[1],
                                    method=method, batch_size=batch_size, workers=workers, device=self.device,
                                    on_progress=on_progress)
        if output is not None:
            write_calibrated(self.network, self.weights, Path(output), fit)
        apply_calibration(self.network, fit)
        return fit

    def set_quality_method(self, method: str) -> None:
        """Make ``auto`` mean ``norm``, ``head`` or ``crfiqa`` from now on (``head``: whichever head the
        model has)."""
        set_method(self.network, method)  # ``auto`` leaves the model's own method

    def features(
        self,
        images: torch.Tensor,
        issame: np.ndarray,
        *,
        name: str = "",
        flip: bool = True,
        batch_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
        meta: dict | None = None,
    ) -> FeatureSet:
        """Per-image features of a decoded verification set (``2P×3×H×W`` uint8 and P ``issame``)."""
        batch_size = _batch_size(batch_size)
        return extract_features(
            self.network, images, issame, name=name, flip=flip, device=self.device,
            batch_size=batch_size, on_batch=on_batch, meta=meta,
        )


def _is_single_image(images: Any) -> bool:
    """One image file, PIL image or ``H×W×C`` array (not a list, a batch or a folder)."""
    if isinstance(images, str | Path):
        return not _is_collection(images)
    if hasattr(images, "ndim"):
        return images.ndim == 3 and images.shape[-1] in (1, 3, 4)
    return hasattr(images, "convert") and hasattr(images, "size")  # a PIL image


@contextmanager
def _progress_bar(what: str, total: int, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A transient Rich bar on stderr (``progress=True`` of the API), or nothing."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def load_model(
    weights: str | Path | None = None,
    quality_weights: str | Path | None = None,
    device: str | torch.device = "auto",
    *,
    arch: str | None = None,
    preprocess: Any = None,
) -> QualityModel:
    """Open any weights fqtool reads (fqtool ``.safetensors``, MagFace / arcface_torch / EQFace / CR-FIQA
    ``.pth``, exported ``.onnx``); ``weights=None`` reads ``$FQTOOL_WEIGHTS``. ``device``: auto, cpu,
    cuda or cuda:N (under torchrun a plain ``cuda``/``auto`` is this rank's GPU, ``cuda:LOCAL_RANK``).
    ``quality_weights`` adds EQFace's ``quality.pth`` head to an EQFace backbone.
    ``preprocess``: the model's input when the file does not say it (or says it wrong), as a
    :class:`~fqtool.models.preprocess.Preprocess` or a ``--preprocess`` SPEC (``"facenet"``,
    ``"size=160,mean=127.5,std=128,colour=bgr"``)."""
    from fqtool.eval.ijb_embed import dist_env, local_device

    path = resolve_weights(_path_arg(weights, "weights"))
    _path_arg(quality_weights, "quality_weights")
    torch_device = device if isinstance(device, torch.device) else resolve_device(str(device))
    _, world, local_rank = dist_env()
    if local_device(torch_device, local_rank, world) != torch_device:  # under torchrun: this rank's GPU
        from fqtool.runtime import use_cuda_device

        torch_device = use_cuda_device(local_device(torch_device, local_rank, world))
    onnx_device = str(device) if path.suffix.lower() == ".onnx" else torch_device
    network = _open_network(path, quality_weights=quality_weights, arch=arch, device=onnx_device,
                            preprocess=preprocess)
    return QualityModel(network, device=torch_device, weights=path)


# ----------------------------------------------------------------------------------------------- evaluation


def align_faces(input: str | Path, output: str | Path, *, on_progress: Callable[[int], None] | None = None,
          **options: Any):
    """Detect and align every photo of ``input`` into ``output``, as ``fqtool align`` (crops, faces.csv,
    no_face.txt; resumable). ``options`` are :class:`fqtool.align.pipeline.AlignOptions` fields (size,
    faces, detector, landmarks, workers, …). Returns the run's :class:`~fqtool.align.pipeline.AlignResult`."""
    from fqtool.align.pipeline import AlignOptions, align_input

    return align_input(input, output, AlignOptions(**options), on_progress=on_progress)


def _align_pairs(detector):
    """``verify --align``: the benchmark's aligner, built from the align core."""
    from fqtool.align.datasets import align_pair_images, missed_faces_note

    def align_images(images, size, name, progress, margin=None):
        with progress(f"align {name}", len(images)) as advance:
            tensor, missed = align_pair_images(images, size, detector=detector, on_progress=advance,
                                               margin=margin)
        names = [f"#{i}" for i in missed]
        return tensor, missed_faces_note(names, len(images), f"{name}: used whole, resized")

    return align_images


def _settings(data_dir, batch_size, workers, align, detector, save_features, progress, notify):
    from fqtool.eval.benchmark import EmbedSettings, no_progress

    return EmbedSettings(
        data_dir=Path(data_dir) if data_dir else None, batch_size=batch_size, workers=workers,
        align=_align_pairs(detector) if align else None, progress=progress or no_progress,
        notify=notify or (lambda line: None), save=Path(save_features) if save_features else None,
    )


def _sources(model_or_features: Any, targets: Any) -> tuple[Any, list[str], list[Path]]:
    """``(model source, TARGETs, features files)`` from ``verify``'s / ``erc_curve``'s first arguments."""
    paths = isinstance(model_or_features, list | tuple) and all(
        isinstance(p, str | Path) for p in model_or_features
    )
    if isinstance(model_or_features, str | Path) or paths:
        if targets:  # a path where the model goes: features files take no targets
            _model_arg(model_or_features)
        paths = [model_or_features] if isinstance(model_or_features, str | Path) else model_or_features
        return None, [], [Path(p) for p in paths]
    names = [targets] if isinstance(targets, str | Path) else list(targets or [])
    model = model_or_features if callable(model_or_features) else _model_arg(model_or_features)
    return model, [str(t) for t in names], []


def verify(
    model_or_features: Any,
    targets: Any = None,
    *,
    protocols: Sequence[str] = ("insightface",),
    flip: bool | None = None,
    folds: int = 10,
    norm_score: bool = False,
    detector_score: bool = False,
    align: bool = False,
    detector: str | Path | None = None,
    data_dir: str | Path | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    save_features: str | Path | None = None,
    progress=None,
    notify: Callable[[str], None] | None = None,
):
    """``fqtool verify``: 10-fold accuracy on pair sets, TAR@FAR on IJB-B / IJB-C, as a
    :class:`~fqtool.eval.results.VerifyReport` (``.results``, ``.to_dict()``, ``.to_csv()``, ``.plot()``).

    ``model_or_features``: a :class:`QualityModel` (or a callable returning one, opened once the inputs
    are checked) with ``targets`` (``lfw``, a ``.bin``, a pairs folder, ``IJBC``, an IJB folder), or a
    features file / list of them. ``flip`` None: each protocol's default. ``progress(label, total)``: a
    context manager yielding ``advance(n)``. Returns None on torchrun ranks other than 0.
    """
    from fqtool.eval.benchmark import VerifyOptions, resolve_benchmarks, run_verify

    model, names, files = _sources(model_or_features, targets)
    benchmarks = resolve_benchmarks(names, files, Path(data_dir) if data_dir else None)
    options = VerifyOptions(list(dict.fromkeys(protocols)), flip, folds, norm_score, detector_score)
    settings = _settings(data_dir, batch_size, workers, align, detector, save_features, progress, notify)
    return run_verify(benchmarks, model, options, settings)


def erc_curve(
    model_or_features: Any,
    target: str | Path | None = None,
    *,
    methods: Sequence[str] = (),
    scores: Sequence[str] = (),
    model_quality: bool = True,
    quality_models: Sequence[str] = (),
    serfiq=None,
    mode: str = "erc",
    fmrs: Sequence[float] | None = None,
    starting_fnmr: float = 0.05,
    pair_quality: str = "min",
    metric: str = "angular",
    pauc_limit: float = 0.2,
    flip: bool | None = None,
    data_dir: str | Path | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    save_features: str | Path | None = None,
    progress=None,
    notify: Callable[[str], None] | None = None,
):
    """``fqtool erc-curve``: ERC / EDC curves of quality methods on one set, as an
    :class:`~fqtool.eval.results.ErcResult` (``.summary()``, ``.to_dict()``, ``.to_csv(folder)``,
    ``.plot(folder)``, ``.write(folder)``). Arguments as :func:`verify`; ``methods``: ``norm``, ``head``,
    ``crfiqa``, ``serfiq`` (replacing the model's own quality), ``scores``: ``NAME=FILE`` quality files,
    ``quality_models``: ``NAME=WEIGHTS`` checkpoints. None on torchrun ranks other than 0."""
    from fqtool.eval.benchmark import ErcOptions, resolve_benchmark, run_erc
    from fqtool.eval.serfiq import SerfiqOptions

    model, names, files = _sources(model_or_features, target)
    if len(names) + len(files) > 1:
        raise FqtoolError("erc-curve takes one set (one TARGET or one features file)")
    benchmark = resolve_benchmark(names[0] if names else None, files[0] if files else None,
                                  Path(data_dir) if data_dir else None)
    options = ErcOptions(list(scores), model_quality, list(methods), list(quality_models),
                         serfiq or SerfiqOptions(), mode, tuple(fmrs) if fmrs else None, starting_fnmr,
                         pair_quality, metric, pauc_limit, flip)
    settings = _settings(data_dir, batch_size, workers, False, None, save_features, progress, notify)
    return run_erc(benchmark, model, options, settings)
