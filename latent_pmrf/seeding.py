"""Seeds derived from tuples of integers through NumPy's ``SeedSequence``.

``derive_seed(seed, rank)`` gives every DDP rank its own random stream while the run stays a
function of ``seed`` alone: the official Latent-PMRF training seeds each device separately, and
without it every rank draws the same source noise ε, VAE posterior samples and flow times t, so a
global batch of 64 on 8 GPUs holds only 8 independent draws. ``torch_generator(seed, i)`` gives
image i of a validation set its own noise, independent of the batch size.
"""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 32-bit seed that depends only on ``keys`` (well mixed: (s, 1) and (s + 1, 0) differ)."""
    if any(k < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative integers, got {keys}")
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def torch_generator(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded by ``derive_seed(*keys)``, e.g. (seed, image index): image i
    draws the same noise whatever batch it is in."""
    return torch.Generator(device=device).manual_seed(derive_seed(*keys))
