"""Classification heads: class centres + margin + (distributed) cross entropy in one module.

One class serves single-process training and Partial FC: when torch.distributed is initialised at
construction, the head holds only this rank's shard of the centres and gathers the batch from all
ranks; otherwise it is the full head. See ``docs/losses.md``.

Contract for the trainer:

* Build the head *after* ``init_process_group``; do **not** wrap it in DDP (its parameters are shards,
  not replicas). Its parameters need their own optimizer group; their gradients are complete per rank.
* Pass the raw (un-normalised) backbone output; the head normalises it (MagFace needs the norm).
* Gradients reaching the backbone are scaled for DDP's averaging (``ddp_grad_scale=True``): after
  DDP they equal the single-process gradient of the global batch, as in arcface_torch.
* ``loss`` (and ``loss_id``, ``loss_g``, ``accuracy``) are global-batch values, identical on all ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadInputError, CheckpointError
from .distributed import (
    all_gather_varlen,
    all_gather_with_grad,
    dist_ready,
    gather_sizes,
    rank_and_world,
    replicated_grad,
)
from .margins import Margin
from .partial_fc import (
    distributed_cross_entropy,
    distributed_top1,
    localize_labels,
    sample_centres,
    shard_range,
    shard_slice,
)
from .registry import LOSSES, get_loss

#: Kinds accepted by :func:`build_head`: every registered loss (:mod:`fqtool.losses.registry`).
HEAD_KINDS = tuple(LOSSES)


class LabelError(BadInputError):
    """Labels that do not fit the configured number of classes."""


@dataclass
class HeadOutput:
    """What one head forward returns. All but ``loss`` are detached (safe to keep for logging)."""

    loss: Tensor  #: scalar to backpropagate: ``loss_id + weight·penalty`` (MagFace λ_g·g, CR-FIQA α·SmoothL1)
    loss_id: Tensor  #: identification (margin softmax / focal) loss, global-batch mean
    penalty: Tensor | None  #: the margin's extra term (unweighted), e.g. MagFace's mean g(a), else None
    accuracy: Tensor  #: top-1 on margin-free cosines over the gathered batch (sampled centres)
    norms: Tensor  #: (B,) fp32 ‖x‖ of this rank's embeddings (MagFace's quality)
    penalty_name: str = ""  #: the penalty's name in the logs (``loss/<name>``): "g", "quality"
    stats: dict[str, Tensor] = field(default_factory=dict)  #: per-sample (global batch) values to log

    @property
    def loss_g(self) -> Tensor | None:
        """MagFace's regulariser mean g(a) (unweighted), else None."""
        return self.penalty if self.penalty_name == "g" else None


def check_labels(labels: Tensor, num_classes: int) -> None:
    """Fail early and clearly on labels the head cannot use (call before the first step).

    Raises ``TypeError`` for a non-int64 or non-1-D tensor (a programming error) and
    :class:`LabelError` (an ``FqtoolError``) for values outside ``[0, num_classes)``, which usually
    means the data set has more identities than the configured ``num_classes``.
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be torch.int64 (LongTensor), got {labels.dtype}; use labels.long()")
    if labels.dim() != 1:
        raise TypeError(f"labels must be 1-D (B,), got shape {tuple(labels.shape)}")
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise LabelError(
            f"labels span [{low}, {high}] but the head has {num_classes} classes "
            f"(valid 0..{num_classes - 1}); check num_classes against the data set"
        )


def cosine_matrix(x_hat: Tensor, weight: Tensor) -> Tensor:
    """(B, C) cosines between unit embeddings and the normalised centres, in fp32 whatever the autocast.

    Under bf16 autocast the product would land on a 2^-8 grid (logit steps of 0.25 at s = 64) before the
    fp32 margins and CR-FIQA's targets. The clamp to [-1, 1] only removes rounding past ±1; it is done in
    place without autograd (the matmul keeps its inputs, not its output), so no (B, C) copy is kept for
    backward and the gradient passes straight through.
    """
    with torch.autocast(device_type=x_hat.device.type, enabled=False):
        cos = F.linear(x_hat.float(), F.normalize(weight.float(), dim=1))
    with torch.no_grad():
        cos.clamp_(-1.0, 1.0)
    return cos


class ClassificationHead(nn.Module):
    """Class centres ``weight`` (num_local, E) ~ N(0, 0.01) + a margin + cross entropy.

    ``forward(embeddings (B, E), labels (B,), quality (B,) | None) -> HeadOutput``.
    """

    def __init__(
        self,
        margin: Margin,
        *,
        num_classes: int,
        embedding_size: int,
        kind: str = "custom",
        sample_rate: float = 1.0,
        focal_gamma: float = 0.0,
        ddp_grad_scale: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
        self.rank, self.world_size = rank_and_world()
        if num_classes < self.world_size:
            raise ValueError(f"{num_classes} classes cannot be sharded over {self.world_size} ranks")
        self.margin, self.kind = margin, kind
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.class_start, self.num_local = shard_range(num_classes, self.rank, self.world_size)
        self.sample_rate, self.focal_gamma = float(sample_rate), float(focal_gamma)
        self.ddp_grad_scale = bool(ddp_grad_scale)
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (self.num_local, self.embedding_size)))
        #: every rank's batch size when a trainer guarantees it (a fixed-size sampler): saves the per-step
        #: collective and host syncs of :func:`gather_sizes`. None: uneven batches allowed, sizes gathered.
        self.batch_per_rank: int | None = None

    # ---------------------------------------------------------------- forward
    def forward(self, embeddings: Tensor, labels: Tensor, quality: Tensor | None = None) -> HeadOutput:
        self._check_inputs(embeddings, labels, quality)
        sizes = self._batch_sizes(embeddings)
        scale = float(self.world_size) if self.ddp_grad_scale else 1.0
        local_norms = embeddings.detach().float().norm(dim=1)
        emb = all_gather_with_grad(embeddings.float(), sizes, scale)
        lab = all_gather_varlen(labels, sizes)
        q = None if quality is None else all_gather_with_grad(quality.float(), sizes, scale)

        norms = emb.norm(dim=1)
        local_labels = localize_labels(lab, self.class_start, self.num_local)
        weight = self.weight
        if self.training and self.sample_rate < 1.0:
            index, local_labels = sample_centres(local_labels, self.num_local, self.sample_rate)
            weight = weight[index]
        cos = cosine_matrix(emb / norms.clamp(min=1e-12).unsqueeze(1), weight)

        logits = self.margin(cos, local_labels, norms=norms, quality=q)
        loss_id, _ = distributed_cross_entropy(logits, local_labels, self.focal_gamma)
        extra = self.margin.penalty(cos, local_labels, norms=norms, quality=q)
        loss, penalty = loss_id, None
        if extra is not None:
            # computed identically on every rank from the gathered batch: each copy counts 1/W
            penalty = replicated_grad(extra.value)
            loss = loss_id + self.margin.penalty_weight * penalty
        return HeadOutput(
            loss=loss,
            loss_id=loss_id.detach(),
            penalty=None if penalty is None else penalty.detach(),
            accuracy=distributed_top1(cos, local_labels),
            norms=local_norms,
            penalty_name=self.margin.penalty_name if extra is not None else "",
            stats={} if extra is None else {k: v.detach() for k, v in extra.stats.items()},
        )

    def _batch_sizes(self, embeddings: Tensor) -> list[int]:
        if self.batch_per_rank is None:
            return gather_sizes(embeddings.shape[0], embeddings.device)
        if embeddings.shape[0] != self.batch_per_rank:
            raise RuntimeError(f"batch_per_rank is {self.batch_per_rank} but this rank's batch has "
                               f"{embeddings.shape[0]} rows")
        return [self.batch_per_rank] * self.world_size

    def _check_inputs(self, embeddings: Tensor, labels: Tensor, quality: Tensor | None) -> None:
        """Shape/dtype checks that cost no device sync (value ranges: :func:`check_labels`)."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"embeddings must be (B, {self.embedding_size}), got {tuple(embeddings.shape)}")
        if labels.dtype != torch.int64 or labels.shape != embeddings.shape[:1]:
            raise TypeError(
                f"labels must be int64 of shape ({embeddings.shape[0]},), got {labels.dtype} "
                f"{tuple(labels.shape)}"
            )
        if quality is not None:
            if not self.margin.takes_quality:
                takers = ", ".join(k for k, spec in LOSSES.items() if spec.margin_class().takes_quality)
                raise ValueError(f"quality is only used by the {takers} heads, not {self.kind!r}")
            if quality.shape != embeddings.shape[:1]:
                raise ValueError(f"quality must be ({embeddings.shape[0]},), got {tuple(quality.shape)}")
        if rank_and_world() != (self.rank, self.world_size):
            raise RuntimeError(
                f"head was built for rank {self.rank}/{self.world_size} but runs as "
                f"{rank_and_world()}; build it after init_process_group"
            )

    # ------------------------------------------------------ resume / re-shard
    def full_state_dict(self, rank0_only: bool = False) -> dict[str, Any]:
        """The full (C, E) centres on CPU, assembled shard by shard (a collective: call on every rank).

        By default **every rank** receives the full matrix (simple: any rank may save or inspect it);
        ``rank0_only=True`` keeps it on rank 0 only (other ranks get ``{}``; each shard travels to rank 0
        alone), saving host memory for very large C: what the trainer's checkpoints use. Peak device
        memory is one shard. Optimizer state is not included: slice full
        momentum buffers with :func:`shard_slice` yourself.
        """
        keep = not rank0_only or self.rank == 0
        full = torch.empty((self.num_classes, self.embedding_size), dtype=self.weight.dtype) if keep else None
        for owner in range(self.world_size):
            part = self._shard_to_rank0(owner) if rank0_only else self._broadcast_shard(owner)
            if full is not None:
                full[shard_slice(self.num_classes, owner, self.world_size)] = part.cpu()
        if full is None:
            return {}
        return {
            "kind": self.kind,
            "num_classes": self.num_classes,
            "embedding_size": self.embedding_size,
            "weight": full,
        }

    def _broadcast_shard(self, owner: int) -> Tensor:
        """``owner``'s shard on every rank (no collective without torch.distributed)."""
        if self.world_size == 1:
            return self.weight.detach()
        _, count = shard_range(self.num_classes, owner, self.world_size)
        buf = (
            self.weight.detach().clone()
            if owner == self.rank
            else self.weight.new_empty((count, self.embedding_size))
        )
        torch.distributed.broadcast(buf, src=owner)
        return buf

    def _shard_to_rank0(self, owner: int) -> Tensor | None:
        """``owner``'s shard on rank 0 (point to point: no other rank receives it), None elsewhere."""
        if owner == self.rank == 0 or self.world_size == 1:
            return self.weight.detach()
        if self.rank == owner:
            torch.distributed.send(self.weight.detach().contiguous(), dst=0)
        elif self.rank == 0:
            _, count = shard_range(self.num_classes, owner, self.world_size)
            buf = self.weight.new_empty((count, self.embedding_size))
            torch.distributed.recv(buf, src=owner)
            return buf
        return None

    def load_full_state_dict(self, state: dict[str, Any]) -> None:
        """Load this rank's rows from a :meth:`full_state_dict` taken with any world size."""
        if "weight" not in state:
            raise CheckpointError("head state has no 'weight' (expected full_state_dict output)")
        weight = state["weight"]
        if tuple(weight.shape) != (self.num_classes, self.embedding_size):
            raise CheckpointError(
                f"head weight is {tuple(weight.shape)}, this head needs ({self.num_classes}, "
                f"{self.embedding_size}): num_classes or embedding size differ"
            )
        rows = weight[shard_slice(self.num_classes, self.rank, self.world_size)]
        with torch.no_grad():
            self.weight.copy_(rows.to(self.weight.device, self.weight.dtype))

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, margin={self.margin!r}, num_classes={self.num_classes}, "
            f"embedding_size={self.embedding_size}, shard=[{self.class_start}, "
            f"{self.class_start + self.num_local}) rank {self.rank}/{self.world_size}, "
            f"sample_rate={self.sample_rate}, focal_gamma={self.focal_gamma}"
        )


def make_margin(kind: str, **overrides: Any) -> Margin:
    """The margin of the registered loss ``kind``: the spec's defaults, ``overrides`` on top."""
    try:
        spec = get_loss(kind)
    except ValueError:
        raise ValueError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}") from None
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown:
        known = ", ".join(p.name for p in spec.params)
        raise ValueError(f"{kind} head: unknown setting(s) {', '.join(unknown)} (its settings: {known})")
    return spec.margin_class()(**{**spec.defaults, **overrides})


def build_head(
    kind: str,
    *,
    num_classes: int,
    embedding_size: int,
    sample_rate: float = 1.0,
    focal_gamma: float | None = None,
    ddp_grad_scale: bool = True,
    **loss_kwargs: Any,
) -> ClassificationHead:
    """A head of ``kind`` in :data:`HEAD_KINDS`; Partial FC automatically under torch.distributed.

    ``focal_gamma=None`` means the loss's default (2.0 for ``eqface``, EQFace's FocalLoss; else 0, plain
    cross entropy). ``loss_kwargs`` override the margin's settings, named as in the registry
    (:data:`fqtool.losses.registry.LOSSES`), e.g. ``s, m2`` for arcface, ``s, m1, m2, m3`` for combined,
    ``s, l_a, u_a, l_m, u_m, lambda_g`` for magface and mag-cosface, ``s, m, alpha, beta, target`` for crfiqa.
    """
    margin = make_margin(kind, **loss_kwargs)
    gamma = get_loss(kind).focal_gamma if focal_gamma is None else focal_gamma
    return ClassificationHead(
        margin,
        num_classes=num_classes,
        embedding_size=embedding_size,
        kind=kind,
        sample_rate=sample_rate,
        focal_gamma=gamma,
        ddp_grad_scale=ddp_grad_scale,
    )


__all__ = [
    "HEAD_KINDS",
    "ClassificationHead",
    "HeadOutput",
    "LabelError",
    "build_head",
    "check_labels",
    "dist_ready",
    "make_margin",
]
