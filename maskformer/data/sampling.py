"""Deterministic, resumable sampling for step-based training.

The global stream of samples is a function of (seed, position): position p draws dataset index
``perm_{p // N}[p % N]`` (a fresh permutation per pass) and an augmentation seed derived from (seed, p).
Process r of w takes positions r, r + w, r + 2w, ... Restarting at any step therefore continues the exact
stream, whatever the number of loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from .transforms import Compose


class ResumableSampler(Sampler):
    """Infinite stream of (index, seed) pairs for one process, starting at ``start`` (a global position)."""

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start + self.rank
        perm, perm_pass = None, -1
        while True:
            current = position // self.size
            if current != perm_pass:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + current)
                perm, perm_pass = torch.randperm(self.size, generator=g), current
            yield int(perm[position % self.size]), (self.seed * 2_654_435_761 + position) % (2**63)
            position += self.world_size


class AugmentedDataset(Dataset):
    """Wraps a reader: ``dataset[(index, seed)]`` loads sample ``index`` and augments it with ``seed``.

    A sample that cannot be loaded raises an error naming its file, or, with ``skip_bad=True``, gives None
    (the collate function leaves it out and training counts it).
    """

    def __init__(self, dataset, transform: Compose | None, make_item, skip_bad: bool = False):
        self.dataset = dataset
        self.transform = transform
        self.make_item = make_item
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        try:
            sample = self.dataset.load(index)
        except (ValueError, OSError):
            if self.skip_bad:
                return None
            raise
        if self.transform is not None:
            try:
                sample = self.transform(sample, torch.Generator().manual_seed(seed))
            except Exception as err:
                if self.skip_bad:
                    return None
                raise RuntimeError(f"{sample.get('file', index)}: augmentation failed ({err})") from err
        return self.make_item(sample)
