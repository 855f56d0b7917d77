"""Rectified-flow training (paper Eqs. 1-3): x_t = t·X1 + (1-t)·Z0, target velocity X1 - Z0."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def stratified_uniform(batch_size: int, rank: int = 0, world_size: int = 1, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """(B,) times in [0, 1): one draw per stratum of [0, 1) split into B·world_size equal bins, rank r
    taking bins r, r + R, ... (PMRF's ``stratified_uniform``), so the global batch covers [0, 1)
    evenly every step."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    n = batch_size * world_size
    offsets = torch.arange(rank, n, world_size, dtype=torch.float32, device=device)
    u = torch.rand(batch_size, generator=generator, device=device)
    return (offsets + u) / n


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t·x1 + (1 - t)·x0 with t of shape (B,)."""
    t = t.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return t * x1 + (1 - t) * x0


def flow_matching_loss(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                       x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. 3: mean over all elements of ‖v(x_t, t) - (x1 - x0)‖² (PMRF's ``mse_loss``)."""
    v = velocity(interpolate(x0, x1, t), t)
    return F.mse_loss(v.float(), (x1 - x0).float())
