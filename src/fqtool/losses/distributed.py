"""The collectives Partial FC needs, all of which reduce to no-ops in a single process.

Two gradient conventions matter here:

* **Gathered inputs** (embeddings, quality) go through :func:`all_gather_with_grad`. Every rank computes
  the *global* loss from its own shard of class centres; the backward pass sums the gradients that all
  ranks computed for each sample and hands every rank the slice of its own samples. That sum is exactly
  the gradient of the global loss. With ``grad_scale = world_size`` (arcface_torch's choice, the
  default of the heads) it is multiplied by W so that DDP's *averaging* of backbone gradients yields the
  single-process gradient of the global batch.
* **Shard sums** (softmax denominators, target logits) go through :func:`all_reduce_sum_local_grad`: the
  value is the global sum, the gradient flows only into this rank's addend. Everything built on top of
  them by ordinary autograd (cross entropy, focal weighting) then has the right partial gradient per
  rank, with no hand-written backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def dist_ready() -> bool:
    """Whether a default process group is initialised (then the heads shard their class centres)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default group, ``(0, 1)`` without torch.distributed."""
    if not dist_ready():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's local batch size (one tiny collective), so ranks may hold uneven batches."""
    _, world = rank_and_world()
    if world == 1:
        return [n]
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(out, mine)
    return [int(t.item()) for t in out]


def all_gather_varlen(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """Concatenate every rank's ``x`` along dim 0 (rank order), padding to the largest batch; no grad."""
    if len(sizes) == 1:
        return x
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums each sample's gradient over ranks and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: tuple[int, ...], rank: int, grad_scale: float) -> Tensor:  # type: ignore[override]
        ctx.sizes, ctx.rank, ctx.grad_scale = sizes, rank, grad_scale
        return all_gather_varlen(x.detach(), sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        mine = total[start : start + ctx.sizes[ctx.rank]]
        return (mine * ctx.grad_scale if ctx.grad_scale != 1 else mine), None, None, None


def all_gather_with_grad(x: Tensor, sizes: Sequence[int], grad_scale: float = 1.0) -> Tensor:
    """Autograd-aware all-gather along dim 0 (see the module docstring for ``grad_scale``)."""
    if len(sizes) == 1:
        return x
    rank, _ = rank_and_world()
    return _AllGatherWithGrad.apply(x, tuple(sizes), rank, float(grad_scale))


def all_reduce_sum_local_grad(x: Tensor) -> Tensor:
    """Global sum over ranks as the value; the gradient flows only into this rank's ``x``."""
    _, world = rank_and_world()
    if world == 1:
        return x
    total = x.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return x + (total - x.detach())


def all_reduce_max(x: Tensor) -> Tensor:
    """Element-wise maximum over ranks, detached (used for the softmax shift and accuracy)."""
    _, world = rank_and_world()
    out = x.detach().clone()
    if world > 1:
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def replicated_grad(x: Tensor) -> Tensor:
    """``x`` unchanged in value, gradient divided by the world size.

    For a term computed identically on every rank from *gathered* inputs (MagFace's ``loss_g`` over the
    global batch): the gather's backward sums the W identical copies, so each copy must count 1/W.
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    return x / world + (x - x / world).detach()
