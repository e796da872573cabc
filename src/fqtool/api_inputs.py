"""The Python API's inputs: images in every accepted form (paths, PIL images, numpy arrays, tensors, lists
of these) read into one uint8 batch, and the one-line errors for arguments of the wrong kind
(``fqtool.api`` re-exports :func:`read_images`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fqtool.errors import FqtoolError

# ----------------------------------------------------------------------------- input checks (h6, 25.13)


def _batch_size(value: Any) -> int:
    """A positive integer batch size, or the one-line error the CLI gives for the same input."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise FqtoolError(f"batch_size must be a positive integer, not {value!r}")
    return int(value)


def _path_arg(value: Any, what: str) -> Any:
    """A path argument: ``str``/``Path`` (or None); anything else is an FqtoolError, not a TypeError."""
    if value is not None and not isinstance(value, str | Path):
        raise FqtoolError(f"{what} must be a path (str or pathlib.Path), not {type(value).__name__}")
    return value


def _from_file(path: Path) -> torch.Tensor:
    from fqtool.data.decode import decode_image, read_image_file

    if not path.exists():
        raise FqtoolError("no such file", path)
    if not path.is_file():
        raise FqtoolError("is not an image file (give folders, list files and .rec to model.score)", path)
    return decode_image(read_image_file(path), str(path))


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


def _not_aligned_note(found: tuple[int, int], size: tuple[int, int]) -> str:
    """The warning for a folder whose images are not the model's size: crops for another model, or photos."""
    if found[0] == found[1] and found[0] <= 256:  # square and small: crops aligned for another input size
        advice = (f"they look like aligned crops for another model and are resized; re-align the photos "
                  f"at this model's size (`fqtool align --size {size[0]}` or --align), or check --preprocess")
    else:
        advice = "they are resized without face alignment; for photos use --align (or `fqtool align` first)"
    return f"images are {found[1]}×{found[0]}, not the model's {size[1]}×{size[0]}: {advice}"


def _is_collection(images: Any) -> bool:
    """A path that names many images: a folder, a list file or a ``.rec`` (not a single image file)."""
    if not isinstance(images, str | Path):
        return False
    from fqtool.data.decode import IMAGE_EXTENSIONS

    path = Path(images).expanduser()
    return path.is_dir() or (path.exists() and path.suffix.lower() not in IMAGE_EXTENSIONS)
