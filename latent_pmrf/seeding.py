"""Seeds derived from tuples of integers through NumPy's ``SeedSequence``.

``derive_seed(seed, rank)`` gives every DDP rank its own random stream while the run stays a
function of ``seed`` alone: the official Latent-PMRF training seeds each device separately, and
without it every rank draws the same source noise ε, VAE posterior samples and flow times t, so a
global batch of 64 on 8 GPUs holds only 8 independent draws.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 32-bit seed that depends only on ``keys`` (well mixed: (s, 1) and (s + 1, 0) differ)."""
    if any(k < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative integers, got {keys}")
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])
