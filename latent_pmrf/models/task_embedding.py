"""Learnable task embeddings (GenSIRR's LTE): one learned vector per task, added to the velocity
net's conditioning path (the mapping network's input, beside the time embedding), so one flow
model restores faces (``bfr``) and removes reflections (``sirr``) and is told which by a vector
rather than a text prompt.

GenSIRR initialises its embedding from a text encoder's embedding of a fixed instruction and
reports that random initialisation fails to converge in FLUX's prompt space; its release never
optimises the embedding. Here it is optimised with the velocity net (``trainable``; ``False`` is the
frozen-embedding ablation) and can start from zeros (the time-only network, so adding a task to a
trained single-task model changes nothing at first), random N(0, init_std²), or a file holding one
row per task (``.pt`` / ``.npy`` / ``.safetensors``, e.g. a saved text embedding projected to the
mapping width).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

INITS = ("zeros", "random", "file")


@dataclass
class TaskEmbeddingConfig:
    tasks: list[str] = field(default_factory=list)  # empty: single-task model, no embedding
    init: str = "zeros"  # "zeros" | "random" | "file"
    init_std: float = 0.02  # random init
    init_file: Optional[str] = None  # init "file": a (len(tasks), width) tensor
    trainable: bool = True  # False: the frozen-embedding ablation

    def __post_init__(self) -> None:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"task_embedding.tasks has duplicates: {self.tasks}")
        if self.init not in INITS:
            raise ValueError(f"task_embedding.init must be one of {INITS}, got {self.init!r}")
        if self.init == "file" and not self.init_file:
            raise ValueError("task_embedding.init 'file' needs task_embedding.init_file")


def _read_rows(path: str | Path) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task embedding file not found: {path}")
    if path.suffix == ".npy":
        import numpy as np

        return torch.from_numpy(np.load(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if len(tensors) != 1:
            raise ValueError(f"{path}: expected one tensor, found {sorted(tensors)}")
        return next(iter(tensors.values()))
    value = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor, got {type(value).__name__}")
    return value


class TaskEmbedding(nn.Module):
    """task ids (B,) long -> (B, width) vectors; ``weight`` holds one row per task."""

    def __init__(self, config: TaskEmbeddingConfig, width: int):
        super().__init__()
        self.config = config
        weight = torch.zeros(len(config.tasks), width)
        if config.init == "random":
            weight.normal_(0.0, config.init_std)
        elif config.init == "file":
            rows = _read_rows(config.init_file).float()
            if rows.shape != weight.shape:
                raise ValueError(f"{config.init_file}: shape {tuple(rows.shape)}, expected {tuple(weight.shape)} "
                                 f"(one row per task {config.tasks}, width {width})")
            weight = rows
        self.weight = nn.Parameter(weight, requires_grad=config.trainable)

    def index(self, task: str) -> int:
        if task not in self.config.tasks:
            raise ValueError(f"unknown task {task!r}: this model was trained for {self.config.tasks}")
        return self.config.tasks.index(task)

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        return self.weight[task_ids]


def task_vectors(embedding: TaskEmbedding | None, task: torch.Tensor | int | None, batch: int) -> torch.Tensor | None:
    """The (B, width) task vectors of a velocity net's ``task`` argument (ids, one or one per image);
    None for a single-task net, which refuses task ids."""
    if embedding is None:
        if task is not None:
            raise ValueError("this velocity net has no task embedding (single-task model) but was given task ids")
        return None
    if task is None:
        raise ValueError(f"this velocity net is multi-task ({embedding.config.tasks}): pass task ids")
    task = torch.as_tensor(task, device=embedding.weight.device).reshape(-1)
    if task.numel() == 1:
        task = task.expand(batch)
    if task.shape != (batch,):
        raise ValueError(f"task ids must be one id or one per image ({batch}), got shape {tuple(task.shape)}")
    return embedding(task)
