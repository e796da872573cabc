"""SER-FIQ (Terhörst et al., CVPR 2020): quality as the robustness of an embedding to dropout.

For each image, ``m`` stochastic passes drop features at the input of the embedding layer (probability
``p``, inverted dropout as in training), every resulting embedding is L2-normalised, and

    quality = 2 · sigmoid(−mean pairwise Euclidean distance of the m embeddings)

(1 when all passes agree; ``2·σ(−√2) ≈ 0.39`` when they are as far apart as unrelated directions).

Cost: the backbone runs **once** per image up to the embedding layer's input; only the embedding layer
(iResNet ``fc`` + BN, MobileFaceNet GDC ``Linear`` + BN) runs ``m`` times, on all passes of a chunk of
images at once. The dropout masks of image ``i`` come from a generator seeded with ``(seed, i)`` only, so
a score depends on the seed and the image's position, not on the batch size or the device chunking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from fqtool.errors import FqtoolError
from fqtool.quality_methods import SERFIQ_UNRELATED

DEFAULT_PASSES = 100
DEFAULT_DROPOUT = 0.5
#: Mask elements (images × passes × features) generated and pushed through the head at once.
CHUNK_ELEMENTS = 1 << 25
#: Quality when the m embeddings are as far apart as orthogonal unit vectors: the 0 of the 0–100 scale.
UNRELATED_QUALITY = SERFIQ_UNRELATED  # the quality-method table's 0 of the SER-FIQ scale


@dataclass(frozen=True)
class SerfiqOptions:
    """SER-FIQ settings: stochastic passes (m), dropout probability (p), seed of the dropout masks."""

    passes: int = DEFAULT_PASSES
    dropout: float = DEFAULT_DROPOUT
    seed: int = 0

    def check(self) -> None:
        check_serfiq_options(self.passes, self.dropout)


def check_serfiq_model(model) -> None:
    """A model SER-FIQ can run on: a torch model whose backbone exposes its embedding layer."""
    backbone = getattr(model, "backbone", None)
    has_split = callable(getattr(backbone, "forward_features", None)) and callable(
        getattr(backbone, "embed_features", None)
    )
    if not isinstance(model, torch.nn.Module) or not has_split:
        kind = type(backbone if backbone is not None else model).__name__
        raise FqtoolError(
            f"--method serfiq needs a model with an embedding layer where dropout can go; {kind} has none "
            "(use a registered or imported torch checkpoint, not ONNX)"
        )


#: More stochastic passes than this only cost time and memory (the SER-FIQ paper uses m = 100).
MAX_PASSES = 10_000


def check_serfiq_options(passes: int, dropout: float) -> None:
    if passes < 2:
        raise FqtoolError(f"SER-FIQ needs at least 2 passes to compare embeddings, got {passes}")
    if passes > MAX_PASSES:  # h6: options that allocate are bounded before allocating (issue 25.10)
        raise FqtoolError(f"--serfiq-passes {passes} is too many (at most {MAX_PASSES}; the paper uses 100)")
    if not 0.0 < dropout < 1.0:
        raise FqtoolError(f"SER-FIQ dropout must be in (0, 1), got {dropout}")


def image_seed(seed: int, index: int) -> int:
    """A 63-bit generator seed for image ``index`` under ``seed``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def dropout_masks(
    seed: int, indices: Iterable[int], passes: int, features: int, dropout: float, device="cpu"
) -> torch.Tensor:
    """Inverted-dropout masks ``(images, passes, features)``: 0 with probability ``dropout``, else 1/(1-p)."""
    device = torch.device(device)
    masks = []
    for index in indices:
        generator = torch.Generator(device=device)
        generator.manual_seed(image_seed(seed, index))
        keep = torch.rand((passes, features), generator=generator, device=device) >= dropout
        masks.append(keep.float() / (1.0 - dropout))
    return torch.stack(masks) if masks else torch.zeros((0, passes, features), device=device)


def robustness_quality(embeddings: torch.Tensor) -> torch.Tensor:
    """``(images, passes, dim)`` raw embeddings → SER-FIQ quality per image (float64)."""
    unit = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    passes = unit.shape[1]
    dist = torch.cdist(unit, unit)  # (images, passes, passes)
    upper = torch.triu_indices(passes, passes, offset=1, device=unit.device)
    mean = dist[:, upper[0], upper[1]].mean(dim=1)
    return 2.0 * torch.sigmoid(-mean)


def serfiq_from_features(
    backbone, flat: torch.Tensor, indices: list[int], *, passes: int, dropout: float, seed: int
) -> torch.Tensor:
    """Quality for images whose embedding-layer inputs are ``flat`` (images × features)."""
    features = flat.shape[1]
    per_chunk = max(1, CHUNK_ELEMENTS // max(1, passes * features))
    out = []
    for start in range(0, len(indices), per_chunk):
        part = flat[start : start + per_chunk].float()
        chunk = indices[start : start + per_chunk]
        masks = dropout_masks(seed, chunk, passes, features, dropout, part.device)
        dropped = (part.unsqueeze(1) * masks).reshape(-1, features)
        embeddings = backbone.embed_features(dropped).float().reshape(len(part), passes, -1)
        out.append(robustness_quality(embeddings))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@torch.inference_mode()
def serfiq_embed(
    model,
    batches: Iterable[torch.Tensor],
    *,
    passes: int = DEFAULT_PASSES,
    dropout: float = DEFAULT_DROPOUT,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings, quality)`` for RGB uint8 batches; embeddings are the usual dropout-free ones."""
    from fqtool.runtime import autocast

    check_serfiq_model(model)
    check_serfiq_options(passes, dropout)
    device = torch.device(device)
    model.eval()
    model.to(device)
    backbone = model.backbone
    embs, quals, seen = [], [], 0
    for batch in batches:
        x = model.prepare(batch.to(device))
        with autocast(device, precision):
            embedding, flat = backbone.forward_features(x)
        indices = list(range(seen, seen + len(batch)))
        seen += len(batch)
        quals.append(serfiq_from_features(backbone, flat, indices, passes=passes, dropout=dropout, seed=seed))
        embs.append(embedding.float().cpu())
        if on_batch is not None:
            on_batch(len(batch))
    if not embs:
        return np.zeros((0, model.embedding_size), np.float32), np.zeros(0, np.float64)
    return torch.cat(embs).numpy(), torch.cat(quals).cpu().numpy()


def serfiq_scores(model, images: torch.Tensor, *, batch_size: int = 64, **options) -> np.ndarray:
    """SER-FIQ quality of an RGB uint8 tensor (N×3×H×W), in order (see :func:`serfiq_embed`)."""
    batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    return serfiq_embed(model, batches, **options)[1]


# ------------------------------------------- the quality-method table's runner (``QualityMethod.beside``)


def check_options(options: SerfiqOptions | None) -> None:
    """Bad ``--serfiq-*`` options fail before anything is embedded (``None``: the defaults)."""
    (options or SerfiqOptions()).check()


def check_model(model) -> None:
    check_serfiq_model(model)


def embed_beside(model, batches: Iterable[torch.Tensor], options: SerfiqOptions | None, *,
                 device: torch.device | str = "cpu", precision: str = "auto",
                 on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`serfiq_embed` with ``options`` (``None``: the defaults)."""
    opts = options or SerfiqOptions()
    return serfiq_embed(model, batches, passes=opts.passes, dropout=opts.dropout, seed=opts.seed,
                        device=device, precision=precision, on_batch=on_batch)
