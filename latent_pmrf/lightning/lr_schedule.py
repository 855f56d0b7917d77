"""Linear warm-up then cosine decay, per optimizer step (Sim-VAE, paper Sec. 4.1)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, base_lr: float, warmup_steps: int, warmup_start_lr: float,
                  cosine_steps: int, min_lr: float) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Warm-up goes linearly from ``warmup_start_lr`` to ``base_lr`` over ``warmup_steps``; then a
    cosine runs from ``base_lr`` to ``min_lr`` over ``cosine_steps`` and stays at ``min_lr``
    (timm's CosineLRScheduler with ``warmup_prefix=True``, as the official training uses).
    """
    if step < warmup_steps:
        return warmup_start_lr + step * (base_lr - warmup_start_lr) / warmup_steps
    t = step - warmup_steps
    if t >= cosine_steps:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t / cosine_steps))
