"""A DDP-aware sampler that hands each dataset item its epoch, so per-sample randomness can be
seeded from (seed, epoch, index) inside any dataloader worker, persistent or not."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from ..seeding import torch_generator


class EpochIndexSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)``; this rank's share of a permutation seeded by ``(seed, epoch)``.

    Like ``DistributedSampler`` (rank r takes positions r, r + R, ...; the permutation is padded
    by wrapping when ``drop_last`` is False), but the epoch travels with the index instead of
    being set on a dataset copy that worker processes do not see. Lightning calls ``set_epoch``
    on a dataloader's sampler every epoch; build the Trainer with ``use_distributed_sampler=False``
    so that it does not wrap this sampler in its own.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 drop_last: bool = False):
        if length <= 0:
            raise ValueError("EpochIndexSampler needs a non-empty dataset")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch = 0
        if drop_last:
            self.num_samples = length // num_replicas
        else:
            self.num_samples = math.ceil(length / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch_generator(self.seed, self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.num_samples * self.num_replicas
        if total > len(order):  # pad by wrapping, as DistributedSampler
            order += (order * math.ceil(total / len(order)))[: total - len(order)]
        for index in order[self.rank : total : self.num_replicas]:
            yield self.epoch, index
