"""Euler integration of the learned ODE dx/dt = v(x, t) from t = 0 (source) to t = 1.

Two time grids (``SCHEDULES``):

- ``uniform``: t_i = i/K (PMRF's sampler; 25 steps at inference, 50 at validation).
- ``flow_match_euler``: the grid of diffusers' ``FlowMatchEulerDiscreteScheduler`` (shift 1,
  1000 training timesteps) that the official Latent-PMRF pipeline samples with: σ_i =
  linspace(1, 1e-3, K) followed by σ_K = 0, the network conditioned on σ = 1 - t. In our time
  t = 1 - σ the grid is linspace(0, 0.999, K) followed by 1: K - 1 steps of 0.999/(K - 1) and a
  last step of 0.001 (for K = 1 a single step of length 1, as uniform).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

SCHEDULES = ("uniform", "flow_match_euler")
FLOW_MATCH_NUM_TRAIN_TIMESTEPS = 1000  # diffusers' default; σ_min = 1 / 1000


def time_grid(steps: int, schedule: str = "uniform") -> torch.Tensor:
    """(K + 1,) float64 times 0 = t_0 < ... < t_K = 1 of a K-step Euler sampler."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if schedule == "uniform":
        return torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    if schedule == "flow_match_euler":
        sigmas = torch.linspace(1.0, 1.0 / FLOW_MATCH_NUM_TRAIN_TIMESTEPS, steps, dtype=torch.float64)
        return torch.cat([1 - sigmas, torch.ones(1, dtype=torch.float64)])
    raise ValueError(f"unknown sampler schedule {schedule!r}; choose from {SCHEDULES}")


@torch.no_grad()
def sample_euler(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, steps: int,
                 return_trajectory: bool = False, schedule: str = "uniform",
                 ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """K Euler steps x_{i+1} = x_i + (t_{i+1} - t_i)·v(x_i, t_i) on ``time_grid(K, schedule)``,
    with t passed as a (B,) float32 tensor. Deterministic given x0. With ``return_trajectory``
    also returns [x_0, x_1, ..., x_K]."""
    grid = time_grid(steps, schedule)
    x = x0
    trajectory = [x0]
    for i in range(steps):
        t = torch.full((x.shape[0],), float(grid[i]), device=x.device, dtype=torch.float32)
        x = x + velocity(x, t).to(x.dtype) * float(grid[i + 1] - grid[i])
        if return_trajectory:
            trajectory.append(x)
    return (x, trajectory) if return_trajectory else x
