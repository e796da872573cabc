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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fqtool.errors import FqtoolError
from fqtool.eval.embed import embed_images
from fqtool.eval.features import FeatureSet, extract_features
from fqtool.eval.scoring import ScoreResult, open_input, score_dataset, set_method
from fqtool.eval.verification import VerificationResult, evaluate_verification
from fqtool.models.loading import load_model as _open_network
from fqtool.models.loading import resolve_weights
from fqtool.runtime import resolve_device

__all__ = ["QualityModel", "load_model", "read_images", "verify"]


# ----------------------------------------------------------------------------------------------- images


def _from_file(path: Path) -> torch.Tensor:
    from fqtool.data.decode import decode_image

    if not path.exists():
        raise FqtoolError("no such file", path)
    if not path.is_file():
        raise FqtoolError("is not an image file (give folders, list files and .rec to model.score)", path)
    return decode_image(path.read_bytes(), str(path))


def _from_array(array: np.ndarray, what: str) -> torch.Tensor:
    """An RGB uint8 array: ``H×W×3`` (one image) or ``N×H×W×3`` (a batch) → ``N×3×H×W``."""
    if array.dtype != np.uint8:
        raise FqtoolError(f"{what} must be uint8 RGB (0-255), got dtype {array.dtype}")
    if array.ndim == 2:  # grey
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise FqtoolError(f"{what} must be H×W×3 or N×H×W×3 RGB, got shape {tuple(array.shape)}")
    return torch.from_numpy(np.require(array, requirements=("C", "W"))).permute(0, 3, 1, 2)


def _from_tensor(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype != torch.uint8:
        raise FqtoolError(f"a tensor of images must be uint8 RGB (0-255), got {tensor.dtype}")
    batch = tensor[None] if tensor.ndim == 3 else tensor
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise FqtoolError(f"a tensor of images must be 3×H×W or N×3×H×W, got shape {tuple(tensor.shape)}")
    return batch.cpu()


def _one_or_batch(item: Any) -> torch.Tensor:
    """Any single input → an ``N×3×H×W`` uint8 tensor (N = 1 except for batches)."""
    if isinstance(item, str | Path):
        return _from_file(Path(item).expanduser())[None]
    if isinstance(item, torch.Tensor):
        return _from_tensor(item)
    if isinstance(item, np.ndarray):
        return _from_array(item, "a numpy image")
    if hasattr(item, "convert") and hasattr(item, "size"):  # a PIL image, without importing PIL here
        return _from_array(np.asarray(item.convert("RGB")), "a PIL image")
    raise FqtoolError(f"cannot read an image from {type(item).__name__}; give a path, a PIL image, "
                      "a uint8 numpy array or a uint8 tensor")


def read_images(images: Any, size: tuple[int, int] | None = (112, 112)) -> torch.Tensor:
    """Any accepted ``images`` → one RGB uint8 tensor ``N×3×H×W``, resized to ``size`` (H, W) if needed."""
    from fqtool.data.decode import resize_if_needed

    items = list(images) if isinstance(images, list | tuple) else [images]
    if not items:
        raise FqtoolError("no images given")
    batches = [resize_if_needed(_one_or_batch(item), size) for item in items]
    shapes = {tuple(b.shape[1:]) for b in batches}
    if len(shapes) > 1:
        raise FqtoolError(f"images of different sizes {sorted(shapes)}; pass size= to resize them")
    return torch.cat(batches) if len(batches) > 1 else batches[0]


class _InMemory:
    """The small dataset interface ``score_dataset`` reads, over decoded images."""

    def __init__(self, images: torch.Tensor, names: list[str]) -> None:
        self.images, self.names = images, names
        self.labels = np.full(len(images), -1, dtype=np.int64)
        self.size = tuple(images.shape[-2:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], -1

    def name(self, i: int) -> str:
        return self.names[i]


def _names(images: Any, count: int) -> list[str]:
    items = images if isinstance(images, list | tuple) else [images]
    if len(items) == count and all(isinstance(item, str | Path) for item in items):
        return [str(item) for item in items]
    return [str(i) for i in range(count)]


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
        batch = read_images(images, self.size)
        out = embed_images(self.network, batch, device=self.device, batch_size=batch_size, flip=flip)
        emb = out.embeddings.astype(np.float32)
        if normalize:
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb

    def quality(self, images: Any, *, method: str = "auto", batch_size: int = 64) -> np.ndarray:
        """Raw quality per image, float32 (the norm for ``norm``, the head's score for ``head``)."""
        return self.score(images, method=method, batch_size=batch_size).quality

    def open(self, source: str | Path):
        """A folder (recursive), list file, ``.rec``, insightface folder or one image, as a dataset."""
        return open_input(source, size=self.size)

    def score(
        self,
        images: Any,
        *,
        method: str = "auto",
        batch_size: int = 64,
        workers: int = 0,
        keep_embeddings: bool = False,
        on_progress: Callable[[int], None] | None = None,
        **method_options: Any,
    ) -> ScoreResult:
        """Quality (raw and 0-100), norms and optionally embeddings, row-aligned with the images.

        ``images``: anything :func:`read_images` takes, a dataset from :meth:`open`, or a folder, list
        file or ``.rec`` path. Unreadable images of a folder/list/.rec are skipped and listed in ``bad``.
        ``method_options`` go to :func:`fqtool.eval.scoring.score_dataset` (options of a quality method).
        """
        if _is_collection(images):
            dataset = self.open(images)
        elif hasattr(images, "name") and hasattr(images, "__getitem__"):
            dataset = images
        else:
            batch = read_images(images, self.size)
            dataset = _InMemory(batch, _names(images, len(batch)))
        return score_dataset(
            self.network, dataset, batch_size=batch_size, workers=workers, device=self.device,
            method=method, keep_embeddings=keep_embeddings, on_progress=on_progress, **method_options,
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
        if method != "auto":
            set_method(self.network, method)

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
        return extract_features(
            self.network, images, issame, name=name, flip=flip, device=self.device,
            batch_size=batch_size, on_batch=on_batch, meta=meta,
        )


def _is_collection(images: Any) -> bool:
    """A path that names many images: a folder, a list file or a ``.rec`` (not a single image file)."""
    if not isinstance(images, str | Path):
        return False
    from fqtool.data.decode import IMAGE_EXTENSIONS

    path = Path(images).expanduser()
    return path.is_dir() or (path.exists() and path.suffix.lower() not in IMAGE_EXTENSIONS)


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
    cuda or cuda:N. ``quality_weights`` adds EQFace's ``quality.pth`` head to an EQFace backbone.
    ``preprocess``: the model's input when the file does not say it (or says it wrong), as a
    :class:`~fqtool.models.preprocess.Preprocess` or a ``--preprocess`` SPEC (``"facenet"``,
    ``"size=160,mean=127.5,std=128,colour=bgr"``)."""
    path = resolve_weights(weights)
    torch_device = device if isinstance(device, torch.device) else resolve_device(str(device))
    onnx_device = str(device) if path.suffix.lower() == ".onnx" else torch_device
    network = _open_network(path, quality_weights=quality_weights, arch=arch, device=onnx_device,
                            preprocess=preprocess)
    return QualityModel(network, device=torch_device, weights=path)


def verify(
    model: QualityModel,
    target: str | Path,
    *,
    data_dir: str | Path | None = None,
    flip: bool = True,
    batch_size: int = 64,
) -> VerificationResult:
    """10-fold verification (insightface protocol) of ``model`` on one set: a ``.bin``, a pairs folder or a
    name found in ``data_dir`` / ``$FQTOOL_DATA`` (``lfw`` → ``lfw.bin``)."""
    from fqtool.eval.targets import decode_target

    name, images, issame = decode_target(str(target), model.size, data_dir)
    features = model.features(images, issame, name=name, flip=flip, batch_size=batch_size)
    embeddings, norms = features.verification_inputs(flip)
    return evaluate_verification(embeddings, features.issame, xnorm_norms=norms, name=name, flip=flip)

