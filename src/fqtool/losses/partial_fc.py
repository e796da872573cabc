"""Partial FC (arcface_torch ``PartialFC_V2``): class centres sharded over ranks, optional sampling.

* Shard of rank r out of W for C classes: ``num_local = C//W + (r < C%W)`` rows starting at
  ``class_start = C//W·r + min(r, C%W)`` — contiguous, in rank order, sizes differing by at most one.
* Labels of the gathered batch are made shard-local (``label − class_start``) or ``−1`` when the class
  lives on another rank.
* ``sample_rate < 1`` (training only): each step keeps ``int(rate·num_local)`` centres — every positive
  of the global batch on this shard plus random negatives — sorted, and remaps labels into that subset.
  Gradients then touch only the sampled rows, which makes very large class counts affordable.
* The cross entropy over the shards (:func:`distributed_cross_entropy`) all-reduces the row maximum and
  the softmax denominator; ``loss = −mean_i log p_{i,y_i}`` over the global batch, optionally focal.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distributed import all_reduce_max, all_reduce_sum_local_grad
from .focal import focal_weighting
from .margins import target_cos


def shard_range(num_classes: int, rank: int, world: int) -> tuple[int, int]:
    """``(class_start, num_local)`` of ``rank``'s shard (arcface_torch's split)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad rank {rank} for world size {world}")
    base, extra = divmod(num_classes, world)
    return base * rank + min(rank, extra), base + int(rank < extra)


def shard_slice(num_classes: int, rank: int, world: int) -> slice:
    """Rows of the full (C, E) centre matrix — or of its optimizer momentum — that ``rank`` holds."""
    start, count = shard_range(num_classes, rank, world)
    return slice(start, start + count)


def localize_labels(labels: Tensor, class_start: int, num_local: int) -> Tensor:
    """Global class ids → shard-local ids, ``−1`` where the class is on another rank."""
    local = labels - class_start
    inside = (local >= 0) & (local < num_local)
    return torch.where(inside, local, torch.full_like(local, -1))


def sample_centres(local_labels: Tensor, num_local: int, sample_rate: float) -> tuple[Tensor, Tensor]:
    """PFC v2 negative sampling: ``(index of kept centres (sorted), labels remapped into them)``.

    All positives are kept (their random key is set above any other); the rest of the
    ``int(sample_rate·num_local)`` slots go to uniformly random negatives. When the positives alone
    exceed the budget, only the positives are kept.
    """
    valid = local_labels >= 0
    positive = torch.unique(local_labels[valid], sorted=True)
    num_sample = max(1, int(sample_rate * num_local))  # never an empty shard
    if num_sample >= positive.numel():
        keys = torch.rand(num_local, device=local_labels.device)
        keys[positive] = 2.0
        index = torch.topk(keys, k=num_sample)[1].sort()[0]
    else:
        index = positive
    remapped = torch.searchsorted(index, local_labels.clamp(min=0))
    return index, torch.where(valid, remapped, local_labels)


def distributed_cross_entropy(
    logits: Tensor, local_labels: Tensor, gamma: float = 0.0
) -> tuple[Tensor, Tensor]:
    """``(loss, −log p_y per sample)`` of softmax CE whose classes are split over ranks.

    ``logits`` (B, C_local) fp32 are this rank's columns; ``local_labels`` (B,) index them or are −1.
    Every rank gets the same global value; each rank's gradient is the partial one through its own
    columns (see :mod:`fqtool.losses.distributed`). Single-process it equals ``F.cross_entropy``.
    """
    logits = logits.float()
    with torch.autocast(device_type=logits.device.type, enabled=False):
        with torch.no_grad():
            row_max = all_reduce_max(logits.max(dim=1).values)
        shifted = logits - row_max.unsqueeze(1)
        z_y = torch.where(local_labels >= 0, target_cos(shifted, local_labels), torch.zeros_like(row_max))
        sums = all_reduce_sum_local_grad(torch.stack([shifted.exp().sum(dim=1), z_y], dim=1))
        neg_logp = sums[:, 0].log() - sums[:, 1]
        return focal_weighting(neg_logp, gamma).mean(), neg_logp


def distributed_top1(cos: Tensor, local_labels: Tensor) -> Tensor:
    """Fraction of rows whose target cosine is the largest over all ranks' (sampled) centres; detached.

    Computed on the margin-free cosines, i.e. the classifier's actual prediction. Ties count as correct.
    With ``sample_rate < 1`` only the sampled negatives compete.
    """
    with torch.no_grad():
        cos = cos.float()
        own = torch.where(
            local_labels >= 0, target_cos(cos, local_labels), torch.full_like(cos[:, 0], float("-inf"))
        )
        both = all_reduce_max(torch.stack([cos.max(dim=1).values, own], dim=1))
        return (both[:, 1] >= both[:, 0]).float().mean()
