"""Early-branching selection: GenSIRR's depth-guided early branching sampling (DEBS, Sec. 3, Fig. 4)
on the Euler sampler of ``sampler.py``.

k source draws run their first m Euler steps together, as one batch of k·B; each branch's end point
is predicted with one step, decoded and scored by a reference-free scorer (``scorers.py``); per
image only the best branch goes on for the remaining K - m steps, on the same ``time_grid`` as
``sample_euler``, so with k = 1 the result is ``sample_euler``'s, bit for bit.

Cost, counted in velocity evaluations of B images (the batched call on k·B images counts as k):
k·m + K - m, against K for ``sample_euler``; the velocity net is called K times in all (m times on
k·B images, K - m times on B). Plus k decodes and k scores, each of one branch's B images, one
branch after another: their peak memory is that of decoding one batch, as in ``restore``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .sampler import time_grid

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def one_step_end_point(x: torch.Tensor, velocity: torch.Tensor, t: float) -> torch.Tensor:
    """x̂1 = x_t + (1 - t)·v(x_t, t): where the straight path through x_t with velocity v is at t = 1
    (the rectified flow's estimate of E[X1 | x_t])."""
    return x + velocity * (1.0 - t)


def choose_branches(scores: torch.Tensor) -> torch.Tensor:
    """(k, B) scores, higher is better -> (B,) index of each image's best branch. A NaN score never
    wins; on ties the lower index does."""
    return torch.nan_to_num(scores.float(), nan=float("-inf")).argmax(0)


@torch.no_grad()
def sample_early_branching(velocity: Velocity, sources: list[torch.Tensor], steps: int,
                           score: Callable[[torch.Tensor], torch.Tensor], branch_steps: int = 1,
                           schedule: str = "uniform", decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                           return_indices: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """x at t = 1 of K = ``steps`` Euler steps from the best of k = ``len(sources)`` draws per image.

    ``sources``: k tensors (B, ...), the source draws. The k branches take ``branch_steps`` = m
    steps (1 <= m <= K) as one batch; the last of them, at t = t_{m-1}, also gives each branch's
    end point x̂1 = x_t + (1 - t)·v (for m = 1: x0 + v(x0, 0)). ``score(decode(x̂1))`` is called
    once per branch, on its B items, and returns (B,) (higher is better; a scorer given all k·B
    stacked would return (k·B,)); each image continues with its best branch. ``decode`` maps the
    flow's space to what the scorer reads (default: identity). With ``return_indices`` also returns
    the chosen branch of each image, (B,) int64 on x's device.
    """
    branches = len(sources)
    if branches < 1:
        raise ValueError("sample_early_branching needs at least one source draw")
    if len({(s.shape, s.dtype, s.device) for s in sources}) != 1:
        raise ValueError("the source draws must share shape, dtype and device, got "
                         + ", ".join(f"{tuple(s.shape)} {s.dtype} {s.device}" for s in sources))
    if not 1 <= branch_steps <= steps:
        raise ValueError(f"branch_steps must be in [1, steps={steps}], got {branch_steps}")
    decode = decode or (lambda x: x)
    batch = sources[0].shape[0]
    grid = time_grid(steps, schedule)
    x = torch.cat(sources)  # k × (B, ...) -> (k·B, ...), branch-major
    chosen = torch.zeros(batch, dtype=torch.long, device=x.device)
    for i in range(steps):
        t = float(grid[i])
        v = velocity(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)).to(x.dtype)
        x_next = x + v * float(grid[i + 1] - grid[i])  # as sample_euler
        if i == branch_steps - 1:
            end_points = one_step_end_point(x, v, t).chunk(branches)  # k × (B, ...)
            scores = torch.stack([_per_image(score(decode(end_point)), batch) for end_point in end_points])
            chosen = choose_branches(scores).to(x.device)
            x_next = x_next.unflatten(0, (branches, batch))[chosen, torch.arange(batch, device=x.device)]
        x = x_next
    return (x, chosen) if return_indices else x


def _per_image(values: torch.Tensor, batch: int) -> torch.Tensor:
    values = torch.as_tensor(values)
    if values.shape != (batch,):
        raise ValueError(f"score returned shape {tuple(values.shape)} for a branch of {batch} image(s); "
                         f"it must return one value per image, ({batch},)")
    return values.detach().float().cpu()
