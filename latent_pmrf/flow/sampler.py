"""Euler integration of the learned ODE dx/dt = v(x, t) from t = 0 (source) to t = 1."""

from __future__ import annotations

from collections.abc import Callable

import torch


@torch.no_grad()
def sample_euler(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, steps: int,
                 return_trajectory: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """K uniform Euler steps: x_{i+1} = x_i + v(x_i, i/K)/K, with t passed as a (B,) tensor.

    As PMRF's sampler (25 steps at inference, 50 at validation); deterministic given x0. With
    ``return_trajectory`` also returns [x_0, x_1, ..., x_K].
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = x0
    trajectory = [x0]
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * dt, device=x.device, dtype=torch.float32)
        x = x + velocity(x, t).to(x.dtype) * dt
        if return_trajectory:
            trajectory.append(x)
    return (x, trajectory) if return_trajectory else x
