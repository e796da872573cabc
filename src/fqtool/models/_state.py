"""State-dict helpers shared by fqtool's checkpoints and the importers of other projects' weights.

Private to :mod:`fqtool.models`: sniffing a weights file's format, reading ``.safetensors``, stripping
key prefixes and a strict ``load_state_dict`` whose failures are one line.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from fqtool.errors import CheckpointError, FqtoolError


def first_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's message cut to its first line (its type name when empty), for one-line errors.

    torch's advice to load with ``weights_only=False`` is never passed on: fqtool does not unpickle
    arbitrary objects, so it cannot apply.
    """
    text = str(exc).strip()
    first = text.splitlines()[0][:limit] if text else type(exc).__name__
    return type(exc).__name__ if "weights_only" in first else first


def few_keys(keys: list[str], limit: int = 3) -> str:
    """``"5 keys (a, b, c, …)"``: enough of a key list for a one-line message."""
    shown = ", ".join(keys[:limit])
    more = ", …" if len(keys) > limit else ""
    return f"{len(keys)} {'key' if len(keys) == 1 else 'keys'} ({shown}{more})"


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_state_checked(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, what: str, path: str | Path | None = None,
    hint: str = "",
) -> None:
    """``load_state_dict(strict=True)`` that fails with one line naming missing/unexpected keys or shapes.

    ``num_batches_tracked`` buffers may be absent (older PyTorch versions did not save them).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    suffix = f"; {hint}" if hint else ""
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{few_keys(missing)} missing")
        if unexpected:
            parts.append(f"{few_keys(unexpected)} unexpected")
        raise CheckpointError(f"weights do not fit {what}: {'; '.join(parts)}{suffix}", path)
    for key, value in expected.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"weights do not fit {what}: {key} has shape {tuple(state[key].shape)} in the file "
                f"but {tuple(value.shape)} in the model{suffix}",
                path,
            )
    full = dict(state)
    for key, value in expected.items():
        full.setdefault(key, value)
    module.load_state_dict(full, strict=True)


def sniff_format(path: Path) -> str:
    """``"onnx"``, ``"safetensors"`` or ``"torch"`` from the suffix and the first bytes."""
    if path.suffix.lower() == ".onnx":
        return "onnx"
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise FqtoolError(f"cannot read file ({exc.strerror or exc})", path) from None
    if size == 0:
        raise CheckpointError("empty file (an interrupted download or copy?)", path)
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if path.suffix.lower() == ".safetensors":
        raise CheckpointError("damaged .safetensors file (bad header)", path)
    raise CheckpointError(
        "not a checkpoint: expected an fqtool .safetensors, a PyTorch .pth/.pt or an .onnx file", path
    )


def _safetensors_error(exc: Exception, path: Path) -> CheckpointError:
    return CheckpointError(f"damaged .safetensors file ({first_line(exc)})", path)


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` header, without reading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise _safetensors_error(exc, path) from None


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a ``.safetensors`` file; damage is a one-line error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise _safetensors_error(exc, path) from None
    return tensors, metadata
