"""Training state: save atomically, resume exactly, across a different number of processes.

A state file (``state/last.pt``, ``state/epoch-NNN.pt``) holds plain tensors and Python values only, so
it loads with ``torch.load(weights_only=True)``:

* ``model``: the trainable model's state dict (replicated, identical on every rank);
* ``head``: the classification head's *full* weights (``head.full_state_dict()``), re-split on resume;
* ``optimizer``: the optimiser state, with the head's momentum gathered to full rows and re-sliced
  (both gathered on rank 0 only, which writes the file);
* ``scaler``, ``step`` (global), ``epoch``, ``samples_in_epoch`` (position in the epoch, in images);
* ``rng``: every rank's python / numpy / torch (/ CUDA) generator states;
* ``bad_steps``, ``config``, ``world_size``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fqtool.errors import CheckpointError, FqtoolError
from fqtool.fsutil import atomic_path
from fqtool.losses import shard_slice
from fqtool.train.distributed import agree, broadcast_object, gather_objects

STATE_VERSION = 1


# -- random generators ---------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- head rows in the optimiser -------------------------------------------------------------------------
def _gather_rows(local: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """All ranks' row shards of a (num_local, ...) tensor → the full (num_classes, ...) tensor on rank 0
    (a collective; the other ranks get None: only the rank that saves ever holds every row)."""
    if not dist.is_initialized():
        return local.detach().clone()
    world = dist.get_world_size()
    rows = -(-num_classes // world)
    padded = torch.zeros((rows, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local.detach()
    main = dist.get_rank() == 0
    parts = [torch.empty_like(padded) for _ in range(world)] if main else None
    dist.gather(padded, parts, dst=0)
    if not main:
        return None
    sizes = [len(range(num_classes)[shard_slice(num_classes, r, world)]) for r in range(world)]
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def _local_slice(num_classes: int) -> slice:
    if not dist.is_initialized():
        return slice(0, num_classes)
    return shard_slice(num_classes, dist.get_rank(), dist.get_world_size())


def sharded_params(head: torch.nn.Module, num_classes: int) -> set[int]:
    """Ids of the head's parameters that are row shards of a (num_classes, ...) matrix."""
    local = len(range(num_classes)[_local_slice(num_classes)])
    return {id(p) for p in head.parameters() if p.dim() >= 1 and p.shape[0] == local}


def optimizer_state(optimizer: torch.optim.Optimizer, head_params: set[int], num_classes: int) -> dict:
    """The optimiser's state dict with every head-shard tensor gathered to its full rows on rank 0 (a
    collective; on the other ranks those entries are None)."""
    state = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, param in enumerate(params):
        if id(param) in head_params and index in state["state"]:
            # state_dict() shares each parameter's entry with the live optimiser: copy before replacing
            entry = state["state"][index] = dict(state["state"][index])
            for key, value in list(entry.items()):
                if torch.is_tensor(value) and value.dim() >= 1 and value.shape == param.shape:
                    full = _gather_rows(value, num_classes)
                    entry[key] = None if full is None else full.cpu()
    return state


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, state: dict, head_params: set[int], num_classes: int
) -> None:
    """Load a gathered optimiser state, slicing head rows for this rank."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    local = _local_slice(num_classes)
    for index, param in enumerate(params):
        entry = state["state"].get(index)
        if id(param) in head_params and entry is not None:
            for key, value in list(entry.items()):
                if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == num_classes:
                    entry[key] = value[local].clone()
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"optimizer state does not fit this run ({exc})") from None


# -- files ----------------------------------------------------------------------------------------------
def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temp file + rename): a crash never leaves a half-written file."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a Python file: write errors are OSError
        torch.save({"version": STATE_VERSION, **state}, handle)
    return path


def find_resume(resume: str | None, output: Path) -> Path | None:
    """``auto`` → ``output/state/last.pt`` if it exists; a folder → its ``state/last.pt``; a file → itself."""
    if not resume:
        return None
    if resume == "auto":
        candidate = output / "state" / "last.pt"
        return candidate if candidate.is_file() else None
    path = Path(resume)
    if path.is_dir():
        path = path / "state" / "last.pt" if (path / "state").is_dir() else path / "last.pt"
    if not path.is_file():
        raise FqtoolError("no training state to resume from", path)
    return path


def agreed_resume(resume: str | None, output: Path, *, is_main: bool) -> tuple[Path, dict[str, Any]] | None:
    """Where every rank resumes from: rank 0 decides, each rank loads its own copy and checks its step.

    Nodes may not share a disk: rank 0 finds the state (``--resume``) and broadcasts its place (relative
    to the output folder when inside it) and step; every rank loads that file from its own disk. A rank
    missing it, or holding another step, stops the run on every rank with one line (no rank hangs).
    """
    def decide() -> tuple[Path, dict[str, Any]] | None:
        path = find_resume(resume, output)
        return None if path is None else (path, load_state(path))

    mine = agree(decide) if is_main else agree(lambda: None)
    place = None
    if mine is not None:
        path, state = mine
        inside = path.resolve().is_relative_to(output.resolve())
        place = (str(path.resolve().relative_to(output.resolve())) if inside else str(path), inside,
                 int(state["step"]))
    place = broadcast_object(place)
    if place is None:
        return None
    where, inside, step = place
    return agree(lambda: mine if is_main else _load_at_step(output / where if inside else Path(where), step))


def _load_at_step(path: Path, step: int) -> tuple[Path, dict[str, Any]]:
    """This rank's copy of the state rank 0 resumes from, if it is at the same step."""
    advice = "every node needs rank 0's state (share the output folder, or copy its state/ folder)"
    if not path.is_file():
        raise FqtoolError(f"no training state here, but rank 0 resumes from step {step}; {advice}", path)
    state = load_state(path)
    if int(state.get("step", -1)) != step:
        raise FqtoolError(f"this training state is at step {state.get('step')}, but rank 0 resumes from step "
                          f"{step}; {advice}", path)
    return path, state


def load_state(path: str | Path) -> dict[str, Any]:
    from fqtool.models.importers import read_torch_file

    state = read_torch_file(Path(path), what="training state")
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError("not an fqtool training state (or from another version)", path)
    return state


def collect_rng() -> list[dict[str, Any]]:
    """Every rank's generator states (all ranks must call this)."""
    return gather_objects(rng_state())
