"""Device selection and other run-time choices shared by inference and training."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from fqtool.errors import FqtoolError

if TYPE_CHECKING:  # torch is imported on first use: the data commands use this module without it
    import torch


def parse_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda|cuda:N`` to a device, without side effects; asking for CUDA where there is none,
    or for a GPU index this machine does not have, is a clear error."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FqtoolError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FqtoolError(f"device {name!r} was asked for but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise FqtoolError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise FqtoolError(f"device {name!r}: this machine has {count} visible GPU(s) (cuda:0 to "
                          f"cuda:{count - 1}; CUDA_VISIBLE_DEVICES renumbers them)")
    return device


def resolve_device(name: str = "auto") -> torch.device:
    """:func:`parse_device`, and an explicit ``cuda:N`` becomes this process's current device, so
    pin-memory threads, RNG states, cuDNN workspaces and ``"cuda"`` tensors all land on GPU N instead of
    GPU 0. ``auto``/``cuda`` mean the current device already and touch nothing (no CUDA context is made
    before a caller such as torchrun's set-up picks its GPU)."""
    device = parse_device(name)
    if device.type == "cuda" and device.index is not None:
        device = use_cuda_device(device)
    return device


def use_cuda_device(device: torch.device) -> torch.device:
    """Make ``device`` (``cuda`` = the current one) the current CUDA device; returns it with its index."""
    import torch

    index = torch.cuda.current_device() if device.index is None else device.index
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 on CUDA GPUs with native bf16 (compute capability ≥ 8.0, Ampere on), fp16 on older
    ones (bf16 is emulated there, slowly), fp32 elsewhere; an explicit choice is kept (fp16 only on CUDA)."""
    if precision not in PRECISIONS:
        raise FqtoolError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        import torch

        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise FqtoolError("--precision fp16 needs CUDA (use bf16 or fp32 on the CPU)")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` (resolved as above) on ``device``: training, validation,
    calibration and scoring all compute in the same precision, bf16 on the CPU included."""
    import torch

    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if resolved == "bf16" else torch.float16)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def loader_workers(requested: int) -> int:
    """DataLoader workers: the request, capped at the usable CPUs (more only adds processes and a warning)."""
    return max(0, min(int(requested), usable_cpus()))


def require_onnxruntime(purpose: str) -> None:
    """ONNX Runtime is a dependency, but a GPU swap can leave none installed: say so in one line."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise FqtoolError(
            f"{purpose} needs ONNX Runtime, which is not installed: pip install onnxruntime "
            "(or onnxruntime-gpu on a CUDA machine; never both)"
        )
