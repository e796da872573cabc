"""One optimiser step's gradient handling: backward, one decision shared by all ranks, step or skip.

Every rank computes two flags, "the forward was finite" (loss, feature norms, quality) and "the gradients
are finite" (after unscaling and clipping), and one all-reduce turns them into the same two answers on
every rank. Each rank's gradients include its own Partial FC shard, so a local decision (the GradScaler's
own ``found_inf``) would let one rank skip while the others step and the DDP replicas drift apart.

* everything finite: step (through the scaler under fp16);
* gradients overflowed under fp16 only: skip and back the loss scale off, as the scaler would on one
  GPU — normal fp16 behaviour, not a bad step;
* anything else: a bad step (the engine counts it, warns, and stops after ``--max-bad-steps``); under
  fp16 the scale is backed off too, so the next step starts clean.
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import nn

from fqtool.train.distributed import all_true_each


class StepOutcome(Enum):
    STEPPED = "stepped"
    OVERFLOW = "overflow"  #: fp16 gradients overflowed on some rank: every rank skipped, scale backed off
    BAD = "bad"  #: a non-finite loss / norm / quality (or gradient without loss scaling): skipped


def grad_scaler(precision: str) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling (fp16 runs on CUDA only; the tests swap in a CPU scaler)."""
    return torch.amp.GradScaler("cuda", growth_interval=100) if precision == "fp16" else None


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [name for name, t in tensors.items()
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


class BufferGuard:
    """Keeps a copy of BatchNorm statistics so a NaN batch cannot poison them for good."""

    def __init__(self, module: nn.Module) -> None:
        self.buffers = [b for name, b in module.named_buffers() if "running" in name]
        self.saved = [b.detach().clone() for b in self.buffers]

    def snapshot(self) -> None:
        for saved, buf in zip(self.saved, self.buffers, strict=True):
            saved.copy_(buf)

    def restore_if_broken(self) -> None:
        if any(not torch.isfinite(b).all() for b in self.buffers):
            for saved, buf in zip(self.saved, self.buffers, strict=True):
                buf.copy_(saved)


def grads_finite(optimizer: torch.optim.Optimizer, head_params: set[int], clip: float,
                 device: torch.device) -> torch.Tensor:
    """Clip the network's gradient norm (``clip > 0``) and tell whether this rank's gradients, head shard
    included, are all finite (a 0-d bool tensor: no host sync)."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    ok = torch.ones((), dtype=torch.bool, device=device)
    trunk = [p for p in params if id(p) not in head_params]
    if trunk:
        norm = torch.nn.utils.clip_grad_norm_(trunk, clip if clip > 0 else math.inf)
        ok = ok & torch.isfinite(norm).to(device)
    for p in params:
        if id(p) in head_params:
            ok = ok & torch.isfinite(p.grad).all().to(device)
    return ok


def back_off(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
    """End an fp16 step that every rank skips: lower the scale exactly as for an overflow.

    After ``unscale_`` the scaler must see ``update()`` before the next step. Its overflow flags are
    this rank's; setting them makes ``update()`` back off (and restart the growth count) on every rank
    alike, so the scales stay equal.
    """
    found = getattr(scaler, "_per_optimizer_states", {}).get(id(optimizer), {}).get("found_inf_per_device")
    if found:
        for flag in found.values():
            flag.fill_(1.0)
        scaler.update()
    else:  # a scaler without those internals: the same scale, by the public API
        scaler.update(new_scale=scaler.get_scale() * scaler.get_backoff_factor())


def backward_and_step(loss: torch.Tensor, forward_ok: torch.Tensor, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler | None, head_params: set[int], clip: float) -> StepOutcome:
    """Backpropagate ``loss`` and step, or skip on every rank alike (see the module docstring)."""
    device = loss.device
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    local = torch.stack([forward_ok.to(device), grads_finite(optimizer, head_params, clip, device)])
    all_forward_ok, all_grads_ok = all_true_each(local)
    if all_forward_ok and all_grads_ok:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return StepOutcome.STEPPED
    if scaler is not None:
        back_off(scaler, optimizer)
        if all_forward_ok:
            return StepOutcome.OVERFLOW
    return StepOutcome.BAD
