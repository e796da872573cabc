"""torchrun set-up: read ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``; without them, one plain process.

``torchrun --nproc-per-node N -m fqtool train-…`` starts N processes that each call :func:`setup`:
NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``, an explicit ``--device cuda:N`` is overridden
with a note), Gloo on CPU. The chosen GPU is always made the process's current device. Multi-node runs
are the same command with ``--nnodes``/``--rdzv-endpoint``; nothing here is specific to one machine.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from fqtool.errors import FqtoolError
from fqtool.runtime import parse_device, resolve_device, use_cuda_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    notes: tuple[str, ...] = ()  # one-line remarks for the run's log (e.g. an overridden --device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise FqtoolError(f"environment variable {name}={value!r} is not an integer") from None


def rank_device(requested: torch.device, local_rank: int) -> tuple[torch.device, str | None]:
    """The device of process ``local_rank`` of a torchrun job: ``cuda:LOCAL_RANK`` on CUDA (an explicit
    other index would put every process on one GPU: it is overridden, with a note), else ``requested``."""
    if requested.type != "cuda":
        return requested, None
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise FqtoolError(f"LOCAL_RANK {local_rank}: this node has {count} visible GPU(s); start at most "
                          f"{count} processes per node (torchrun --nproc-per-node {count})")
    device = torch.device("cuda", local_rank)
    note = None
    if requested.index is not None and requested.index != local_rank:
        note = (f"--device cuda:{requested.index} is ignored under torchrun: each process takes "
                f"cuda:LOCAL_RANK (this one {device}); choose the GPUs with CUDA_VISIBLE_DEVICES")
    return device, note


def setup(device_name: str = "auto", timeout_min: float = 30.0) -> DistEnv:
    """Initialise the process group when launched by torchrun (``--nproc-per-node 1`` included: the same
    NCCL/Gloo code paths as N processes); otherwise return a single-process env. Either way a CUDA device
    is made the process's current device."""
    world = _env_int("WORLD_SIZE")
    if world is None or (world <= 1 and "MASTER_ADDR" not in os.environ):  # not started by torchrun
        return DistEnv(device=resolve_device(device_name))
    local_rank = _env_int("LOCAL_RANK") or 0
    device, note = rank_device(parse_device(device_name), local_rank)
    if device.type == "cuda":
        device = use_cuda_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=timeout_min),
            device_id=device if device.type == "cuda" else None,
        )
    return DistEnv(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size(),
                   device=device, notes=(note,) if note else ())


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_true(flag: torch.Tensor | bool) -> bool:
    """True only when ``flag`` (a bool or a 0-d bool tensor) is true on every rank; one host sync."""
    if not torch.is_tensor(flag):
        flag = torch.tensor(bool(flag))
    if not dist.is_initialized():
        return bool(flag)
    value = (~flag).float().reshape(1)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() == 0.0)


def all_true_each(flags: torch.Tensor) -> list[bool]:
    """For each entry of a 1-d bool tensor: true on every rank? One all-reduce and one host sync."""
    bad = (~flags.bool()).float()
    if dist.is_initialized():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return [value == 0.0 for value in bad.tolist()]


def agree(action: Callable[[], T]) -> T:
    """Run ``action`` on every rank; if it raises an :class:`FqtoolError` on any rank, raise on every rank.

    A rank that fails alone would leave the others waiting in their next collective (a hang under NCCL);
    here every rank reaches one gather, then all stop with the same one-line message.
    """
    try:
        result, failure = action(), None
    except FqtoolError as exc:
        result, failure = None, exc
    if not dist.is_initialized():
        if failure is not None:
            raise failure
        return result
    messages = gather_objects(None if failure is None else str(failure))
    if failure is not None:
        raise failure
    for rank, message in enumerate(messages):
        if message is not None:
            raise FqtoolError(f"rank {rank}: {message}")
    return result


def gather_objects(obj):
    """Every rank's ``obj`` as a list (index = rank); ``[obj]`` without a process group."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _sum_hook(state, bucket):
    """DDP comm hook: sum gradients across ranks (no division by the world size)."""
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def wrap_ddp(module: nn.Module, env: DistEnv, *, sum_gradients: bool = False) -> nn.Module:
    """DDP around ``module`` when distributed, else the module itself.

    ``sum_gradients``: for losses already averaged over the *global* batch (Partial FC all-gathers the
    embeddings), the per-rank gradients are partial sums of the global gradient, so they are summed.
    """
    if not env.distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [env.device.index] if env.device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(module, device_ids=ids)
    if sum_gradients:
        ddp.register_comm_hook(None, _sum_hook)
    return ddp


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are reduced over all ranks, on any device (Gloo included).

    ``torch.nn.SyncBatchNorm`` is CUDA-only; this one uses the differentiable all-reduce, so the
    gradients are those of BatchNorm over the global batch. Same parameters and buffers as BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.tensor([float(x.numel() // x.shape[1])], device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        stats = all_reduce(stats)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum
                if momentum is None:
                    momentum = 1.0 / float(self.num_batches_tracked)
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach() * momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach() * momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch statistics over the global batch: torch's SyncBatchNorm on CUDA, else CpuSyncBatchNorm."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            new = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            for p_new, p_old in zip(new.parameters(), child.parameters(), strict=True):
                p_new.requires_grad_(p_old.requires_grad)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return module
