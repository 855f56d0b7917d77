"""A DDP-aware sampler that hands each dataset item its epoch, so per-sample randomness can be
seeded from (seed, epoch, index) inside any dataloader worker, persistent or not; and the
DataLoader that checkpoints how far into an epoch training got, so a restarted run continues
with exactly the batches the stopped one had not trained on."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..seeding import torch_generator


class EpochIndexSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)``; this rank's share of a permutation seeded by ``(seed, epoch)``.

    Like ``DistributedSampler`` (rank r takes positions r, r + R, ...; the permutation is padded
    by wrapping when ``drop_last`` is False), but the epoch travels with the index instead of
    being set on a dataset copy that worker processes do not see. Lightning calls ``set_epoch``
    on a dataloader's sampler every epoch; build the Trainer with ``use_distributed_sampler=False``
    so that it does not wrap this sampler in its own.

    Resumable: ``state_dict(taken)`` is where the current pass stands once this rank has consumed
    ``taken`` items (its epoch and the position in the permutation, counting the items of all
    ranks); after ``load_state_dict`` the next pass over that epoch starts there, each rank
    taking an equal share of the rest (another number of ranks than the one that stopped works).
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
        self._resume_at: tuple[int, int] | None = None  # (epoch, position) where the next pass of that epoch starts
        self._pass = (0, 0)  # (epoch, start position) of the current pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self, taken: int = 0) -> dict[str, int]:
        epoch, start = self._pass
        return {"epoch": epoch, "position": start + taken * self.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self._resume_at = self._pass = (self.epoch, int(state["position"]))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = self._resume_at[1] if self._resume_at is not None and self._resume_at[0] == self.epoch else 0
        self._resume_at, self._pass = None, (self.epoch, start)
        if self.shuffle:
            g = torch_generator(self.seed, self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.num_samples * self.num_replicas
        if total > len(order):  # pad by wrapping, as DistributedSampler
            order += (order * math.ceil(total / len(order)))[: total - len(order)]
        per_rank = max(0, total - start) // self.num_replicas  # equal shares: no rank waits for another
        for index in order[start + self.rank : start + per_rank * self.num_replicas : self.num_replicas]:
            yield self.epoch, index


class ResumableLoader(DataLoader):
    """A DataLoader over an ``EpochIndexSampler`` that Lightning saves in its checkpoints and
    restores (``state_dict``/``load_state_dict``: Lightning's "resumable dataloader").

    The state counts the batches this loader has handed to the training loop in the current
    pass, not those the sampler or the workers have prefetched, so a run restarted from a
    checkpoint written after batch n of an epoch continues that epoch with batch n + 1.
    """

    def __init__(self, dataset: Dataset, *, sampler: EpochIndexSampler, batch_size: int, **kwargs):
        if not isinstance(sampler, EpochIndexSampler):  # e.g. Lightning wrapped it for DDP
            raise TypeError(f"ResumableLoader needs an EpochIndexSampler, got {type(sampler).__name__}: build the "
                            "Trainer with use_distributed_sampler=False (the sampler shards ranks itself)")
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self._handed_out = 0

    def __iter__(self) -> Iterator:
        self._handed_out = 0
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict(taken=self._handed_out * self.batch_size)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)


def sharded_train_loader(dataset, batch_size: int, seed: int, num_workers: int, trainer=None) -> ResumableLoader:
    """A training loader over this rank's share of ``dataset`` (``EpochIndexSampler``: seeded
    per (seed, epoch), ranks disjoint), resumable mid-epoch; ``trainer`` gives the rank and world."""
    if len(dataset) < batch_size:
        raise ValueError(f"data.train has {len(dataset)} images, fewer than data.batch_size={batch_size}")
    sampler = EpochIndexSampler(len(dataset), shuffle=True, seed=seed, num_replicas=trainer.world_size if trainer else 1,
                                rank=trainer.global_rank if trainer else 0, drop_last=True)
    return ResumableLoader(dataset, sampler=sampler, batch_size=batch_size, drop_last=True, num_workers=num_workers,
                           persistent_workers=num_workers > 0, pin_memory=True)
