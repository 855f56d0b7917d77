"""Multi-task training data: each item is drawn from one task's dataset (BFR faces, SIRR pairs, ...)
with per-task sampling ratios, and carries its task id, so one flow model learns every task with
its task embedding (``models/task_embedding.py``).

Item ``(epoch, index)`` picks task k with probability ``ratios[k]`` and one of its items uniformly,
with the generator of (seed, epoch, index), then reads that item as ``(epoch, item)`` from the
task's own (epoch, index)-seeded dataset: the draw depends on nothing but those numbers, in any
worker or rank. Items keep the keys every task shares (``lq``, ``gt``, ``index``, ``skipped``,
``path``) plus ``task``.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from .bfr_datasets import item_rng
from .mixing import check_mixture

KEYS = ("lq", "gt", "skipped", "path")
TASK_STREAM = 0x7A5C  # keeps this draw apart from the tasks' own (seed, epoch, index) streams


class TaskMixDataset(Dataset):
    def __init__(self, datasets: list[Dataset], ratios: list[float], length: int, seed: int = 0):
        check_mixture([len(d) for d in datasets], ratios, length, "task")
        self.datasets, self.ratios, self.length, self.seed = datasets, list(ratios), length, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        rng = item_rng(self.seed, TASK_STREAM, epoch, index)
        task = int(rng.choice(len(self.datasets), p=self.ratios))
        dataset = self.datasets[task]
        picked = dataset[(epoch, int(rng.integers(0, len(dataset))))]
        out = {key: picked.get(key, 0 if key == "skipped" else "") for key in KEYS}
        return {**out, "index": index, "task": task}
