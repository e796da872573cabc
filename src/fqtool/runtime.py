"""Device selection and other run-time choices shared by inference and training."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fqtool.errors import FqtoolError

if TYPE_CHECKING:  # torch is imported on first use: the data commands use this module without it
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda|cuda:N`` to a device; asking for CUDA where there is none is a clear error."""
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
    return device


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
    """ONNX Runtime is an optional extra (``fqtool[cpu]`` or ``fqtool[gpu]``): say so in one line."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise FqtoolError(
            f"{purpose} needs ONNX Runtime, which is not installed: pip install 'fqtool[cpu]' "
            "(or 'fqtool[gpu]' on a CUDA machine; never both)"
        )
