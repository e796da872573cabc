"""The training input pipeline: a data set opened in place, a global-order batch sampler, flips on uint8.

The sampler makes the *global* batch sequence a function of ``(seed, epoch)`` only: every epoch is one
permutation of the data set, cut into global batches of ``batch_size × world_size`` images; rank ``r``
takes the ``r``-th slice of each. One process with batch 256 and two with batch 128 therefore see the
same global batches, and resuming skips exactly the batches already consumed, for any world size.
Flips are drawn with the permutation, so they are reproducible too. Images stay uint8 until
``FaceModel.prepare`` runs on the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from fqtool.errors import FqtoolError


class GlobalBatchSampler:
    """Yields, for this rank, lists of ``(index, flip)`` of the global batches of one epoch."""

    def __init__(
        self, num_samples: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
        flip: bool = True,
    ) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size, self.seed, self.flip = rank, world_size, seed, flip
        self.global_batch = batch_size * world_size
        if num_samples < self.global_batch:
            raise FqtoolError(
                f"the data set has {num_samples} images, fewer than one global batch "
                f"({batch_size} × {world_size} processes); lower --batch-size"
            )
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start_batch`` global batches."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=gen)
        flips = torch.randint(0, 2, (self.num_samples,), generator=gen).bool() & self.flip
        for batch in range(self.start_batch, self.batches_per_epoch):
            start = batch * self.global_batch + self.rank * self.batch_size
            picked = order[start : start + self.batch_size]
            yield list(zip(picked.tolist(), flips[picked].tolist(), strict=True))


class FlipDataset(Dataset):
    """Wraps a face data set: item ``(index, flip)`` → (uint8 image, label), flipped horizontally if asked."""

    def __init__(self, base) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = key
        image, label = self.base[index]
        return (image.flip(-1) if flip else image), int(label)


def _collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([image for image, _ in items])
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return images, labels


def make_loader(dataset, sampler: GlobalBatchSampler, *, workers: int, pin_memory: bool) -> DataLoader:
    from fqtool.runtime import loader_workers

    workers = loader_workers(workers)
    return DataLoader(
        FlipDataset(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(sampler.seed),  # worker seeds: not from the global RNG
    )


def open_training_data(path: str, size: tuple[int, int]):
    """The data set at ``path`` (a .rec folder read in place, a list file or an image folder); every
    image needs an identity label (≥ 0)."""
    import numpy as np

    from fqtool.data.datasets import open_dataset

    dataset = open_dataset(path, size=size)
    unlabelled = np.flatnonzero(np.asarray(dataset.labels) < 0)
    if len(unlabelled):
        raise FqtoolError(f"{len(unlabelled)} of {len(dataset)} images have label -1 (no identity), e.g. "
                          f"{dataset.name(int(unlabelled[0]))}; training needs an identity label per image "
                          "(identity sub-folders, or a list with labels)", path)
    return dataset
