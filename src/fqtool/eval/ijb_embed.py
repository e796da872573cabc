"""Streaming, sharded, resumable embedding of an IJB set's loose crops.

The image list is cut into fixed chunks (``CHUNK`` images). Under torchrun, rank ``r`` of ``W`` embeds
chunks ``r, r + W, …`` on ``cuda:LOCAL_RANK``; every finished chunk is written atomically to the parts
folder (``<features>.parts/``), so an interrupted run resumes at the first missing chunk, with any
number of ranks. Rank 0 then waits for every chunk and assembles the features; only one chunk of
decoded images is in memory at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from fqtool.data.ijb import IjbAlignedFaces, IjbMeta
from fqtool.errors import BadInputError, FqtoolError
from fqtool.eval.embed import embed_images
from fqtool.eval.ijb import IjbFeatures
from fqtool.fsutil import atomic_path, atomic_write_text, ensure_dir

CHUNK = 8192
MANIFEST = "manifest.json"


def dist_env() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from torchrun's variables; ``(0, 1, 0)`` without them."""

    def read(key: str, default: int) -> int:
        try:
            return int(os.environ.get(key, default))
        except ValueError:
            raise FqtoolError(f"${key} is not an integer: {os.environ.get(key)!r}") from None

    return read("RANK", 0), read("WORLD_SIZE", 1), read("LOCAL_RANK", 0)


#: Open :func:`process_group_scope` blocks: the process group made for the first set serves them all.
_GROUP_SCOPES: list[bool] = []


@contextlib.contextmanager
def process_group_scope() -> Iterator[None]:
    """Keep the process group that embedding creates under torchrun until the block ends.

    A group destroyed and created again for the next set reads the first group's stale addresses from
    torchrun's store ("connection refused"): several sets share one group, destroyed once at the end."""
    import torch.distributed as dist

    had_group = dist.is_available() and dist.is_initialized()
    _GROUP_SCOPES.append(True)
    try:
        yield
    finally:
        _GROUP_SCOPES.pop()
        if not had_group and not _GROUP_SCOPES and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def chunk_ranges(num_images: int, chunk: int = CHUNK) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, num_images)) for start in range(0, num_images, chunk)]


def _chunk_path(parts: Path, start: int, end: int) -> Path:
    return parts / f"chunk_{start:09d}_{end:09d}.npz"


def _check_manifest(parts: Path, manifest: dict) -> None:
    path = parts / MANIFEST
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            found = None
        if found != manifest:
            raise FqtoolError(
                "holds embedding shards of another run (other set, model, flip or chunk size); "
                "delete it or save the features elsewhere",
                parts,
            )
    else:
        atomic_write_text(path, json.dumps(manifest, sort_keys=True) + "\n")


def _load_chunk(path: Path, rows: int) -> dict[str, np.ndarray] | None:
    """A finished chunk, or None when it is missing or damaged (then it is embedded again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception:  # noqa: BLE001 - any damage to a chunk means "embed it again"
        return None
    from fqtool.eval.feature_checks import chunk_is_usable  # h6: NaN or odd chunks are redone (25.2)

    return arrays if chunk_is_usable(arrays, rows) else None


def local_device(device: torch.device, local_rank: int, world: int) -> torch.device:
    """Under torchrun a CUDA device without an index is this rank's GPU (``cuda:LOCAL_RANK``), not GPU 0."""
    if world > 1 and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def _batches(todo: list[tuple[int, int]], batch_size: int) -> list[tuple[int, list[int]]]:
    """``(chunk number, image rows)`` per batch; a batch never straddles two chunks."""
    return [
        (k, list(range(first, min(first + batch_size, end))))
        for k, (start, end) in enumerate(todo)
        for first in range(start, end, batch_size)
    ]


def _loader(meta: IjbMeta, batches, workers: int, device: torch.device) -> DataLoader:
    """One loader for every chunk this rank embeds (its workers start once, not once per chunk)."""
    from fqtool.runtime import loader_workers

    workers = min(loader_workers(workers), len(batches))
    return DataLoader(
        IjbAlignedFaces(meta, np.arange(len(meta.images))),
        batch_sampler=[rows for _, rows in batches],
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )


def _embed_chunks(model, meta: IjbMeta, todo, *, device, batch_size, workers, flip, precision, on_batch):
    """Yield ``((start, end), arrays)`` for each chunk of ``todo`` as soon as its last batch is embedded."""
    from fqtool.data.decode import resize_if_needed

    size = tuple(model.preprocess.size)
    batches = _batches(todo, batch_size)
    last_batch = {k: i for i, (k, _) in enumerate(batches)}
    parts: dict[str, list] = {"embeddings": [], "quality": [], "norms": [], "embeddings_flip": []}
    for i, (_index, images, errors) in enumerate(_loader(meta, batches, workers, device)):
        bad = [e for e in errors if e]
        if bad:
            raise BadInputError(bad[0])
        images = resize_if_needed(images, size)
        out = embed_images(
            model, images, device=device, batch_size=len(images), flip=flip, precision=precision
        )  # the one flip of fqtool: e and e_flip come back separately
        parts["embeddings"].append(out.unflipped if flip else out.embeddings)
        parts["quality"].append(out.quality)
        parts["norms"].append(out.norms)
        if flip:
            parts["embeddings_flip"].append(out.flipped)
        if on_batch is not None:
            on_batch(len(images))
        k = batches[i][0]
        if last_batch[k] == i:
            yield todo[k], {key: np.concatenate(v).astype(np.float32) for key, v in parts.items() if v}
            parts = {key: [] for key in parts}


def _save_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _wait_for_others(world: int, parts: Path, ranges: list[tuple[int, int]]) -> None:
    """Rank 0 waits for every chunk: a process-group barrier when there is one, else the chunk files."""
    if world <= 1:
        return
    import torch.distributed as dist

    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", timeout=timedelta(hours=6))
    dist.barrier()
    if own_group and not _GROUP_SCOPES:
        dist.destroy_process_group()
    missing = [r for r in ranges if not _chunk_path(parts, *r).is_file()]
    if missing:
        raise FqtoolError(f"{len(missing)} embedding chunks are missing after every rank finished", parts)


def embed_ijb(
    model,
    meta: IjbMeta,
    *,
    parts: Path | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    flip: bool = True,
    precision: str = "auto",
    info: dict | None = None,
    on_batch: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
) -> IjbFeatures | None:
    """Embed every image of ``meta`` (with its flip); the features on rank 0, None on other ranks.

    ``parts``: folder for finished chunks (resume); None keeps them in memory (single process only).
    ``on_batch(n)`` counts images, including those of chunks found already done.
    """
    rank, world, _ = dist_env()
    if world > 1 and parts is None:
        raise FqtoolError("embedding with several processes needs a parts folder (give --save-features)")
    device = torch.device(device)
    info = {
        "quality_method": getattr(model, "quality_method", "norm"),
        "arch": getattr(getattr(model, "info", None), "arch", None),
        **(info or {}),
    }
    ranges = chunk_ranges(len(meta.images), chunk)
    if parts is not None:
        ensure_dir(parts)
        from fqtool.eval.feature_checks import resume_key  # h6: keyed by the weights' content (25.1)

        _check_manifest(parts, resume_key(
            model, set=meta.name, images=len(meta.images), chunk=chunk, flip=flip, precision=precision,
            arch=info.get("arch"), quality_method=info.get("quality_method"),
        ))
    done: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    began = time.perf_counter()
    todo = []
    for k, (start, end) in enumerate(ranges):
        if k % world != rank:
            continue
        arrays = _load_chunk(_chunk_path(parts, start, end), end - start) if parts is not None else None
        if arrays is None:
            todo.append((start, end))
        elif on_batch is not None:
            on_batch(end - start)
    embedded = _embed_chunks(model, meta, todo, device=device, batch_size=batch_size, workers=workers,
                             flip=flip, precision=precision, on_batch=on_batch)
    for (start, end), arrays in embedded:
        if parts is not None:
            _save_chunk(_chunk_path(parts, start, end), arrays)
        else:
            done[(start, end)] = arrays
    _wait_for_others(world, parts, ranges)
    if rank != 0:
        return None
    info["embed_seconds"] = round(time.perf_counter() - began, 3)
    return _assemble(meta, ranges, parts, done, flip, info)


def _assemble(meta: IjbMeta, ranges, parts: Path | None, done: dict, flip: bool, info: dict) -> IjbFeatures:
    chunks = []
    for start, end in ranges:
        arrays = (
            done.get((start, end))
            if parts is None
            else _load_chunk(_chunk_path(parts, start, end), end - start)
        )
        if arrays is None:
            raise FqtoolError(
                f"embedding chunk {start}..{end} is missing or damaged; run again to redo it", parts
            )
        chunks.append(arrays)

    def stack(key: str) -> np.ndarray:
        return np.concatenate([c[key] for c in chunks])

    return IjbFeatures(
        name=meta.name,
        images=meta.images,
        embeddings=stack("embeddings"),
        quality=stack("quality"),
        detector_scores=meta.detector_scores,
        templates=meta.templates,
        medias=meta.medias,
        pair_t1=meta.pair_t1,
        pair_t2=meta.pair_t2,
        pair_label=meta.pair_label,
        embeddings_flip=stack("embeddings_flip") if flip else None,
        meta=info,
    )
