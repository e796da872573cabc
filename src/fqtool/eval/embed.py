"""Batched embedding + quality extraction, shared by ``score``, ``verify``, ``erc-curve`` and training.

Works with a torch :class:`~fqtool.models.FaceModel` or any object with the same small interface
(``prepare(uint8 images) -> input`` and ``__call__(input) -> (embedding, quality)``), such as the ONNX
Runtime wrapper in :mod:`fqtool.export`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from fqtool.runtime import autocast


@dataclass
class Embeddings:
    """Per-image outputs, row-aligned with the input order.

    ``embeddings`` are raw (not L2-normalised); with ``flip`` they are ``e(x) + e(flip(x))`` as in
    insightface's verification, and ``unflipped`` / ``flipped`` hold the two terms. ``norms`` and
    ``quality`` always come from the unflipped image.
    """

    embeddings: np.ndarray
    quality: np.ndarray
    norms: np.ndarray
    flip_norms: np.ndarray | None = None
    unflipped: np.ndarray | None = None
    flipped: np.ndarray | None = None


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size]
    else:
        yield from images


@torch.inference_mode()
def embed_images(
    model,
    images: torch.Tensor | Iterable[torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    flip: bool = False,
    precision: str = "auto",
    on_batch: Callable[[int], None] | None = None,
) -> Embeddings:
    """Embed RGB uint8 images (a tensor N×3×H×W or an iterable of such batches).

    ``flip``: also embed each image mirrored left-right. This is fqtool's only flip: it mirrors the
    network input along its width (the same as mirroring the RGB pixels, since preprocessing works per
    pixel; ``tests/test_flip.py`` checks it against numpy on decoded images).
    ``precision``: ``auto`` = bf16 autocast on CUDA, fp32 on CPU; ``fp32``/``bf16``/``fp16`` to force
    (:func:`fqtool.runtime.autocast`, the same as training).
    ``on_batch(n)`` is called after each batch with the images embedded (twice the batch with ``flip``).
    """
    device = torch.device(device)
    is_torch = isinstance(model, torch.nn.Module)
    if is_torch:
        model.eval()
        if device.type == "cuda":
            model.to(device, memory_format=torch.channels_last)
    embs, quals, norms, flip_norms, plain, mirrored = [], [], [], [], [], []
    for batch in _batches(images, batch_size):
        if is_torch:
            batch = batch.to(device, non_blocking=True)
        x = model.prepare(batch)
        if is_torch and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            emb, qual = model(x)
            emb = emb.float()
            norms.append(torch.linalg.vector_norm(emb, dim=1).cpu())
            if flip:
                emb_flip = model(x.flip(-1))[0].float()
                flip_norms.append(torch.linalg.vector_norm(emb_flip, dim=1).cpu())
                plain.append(emb.cpu())
                mirrored.append(emb_flip.cpu())
                emb = emb + emb_flip
        embs.append(emb.cpu())
        quals.append(qual.float().reshape(-1).cpu())
        if on_batch is not None:
            on_batch(len(batch) * (2 if flip else 1))
    if not embs:
        size = model.embedding_size
        empty = np.zeros((0,), np.float32)
        no_rows = np.zeros((0, size), np.float32)
        return Embeddings(no_rows, empty, empty, *((empty, no_rows, no_rows) if flip else ()))
    return Embeddings(
        embeddings=torch.cat(embs).numpy(),
        quality=torch.cat(quals).numpy(),
        norms=torch.cat(norms).numpy(),
        flip_norms=torch.cat(flip_norms).numpy() if flip else None,
        unflipped=torch.cat(plain).numpy() if flip else None,
        flipped=torch.cat(mirrored).numpy() if flip else None,
    )
