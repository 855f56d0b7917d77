"""Exponential moving average of the weights, on Lightning's own ``WeightAveraging`` callback.

Lightning swaps the average in for validation, stores it as the checkpoint's ``state_dict``
(the live weights go to ``current_model_state``) and restores both on resume. The decay follows
the official Sim-VAE training (diffusers' ``EMAModel``): ``min(decay, (1 + n) / (10 + n))`` after
``n`` updates, so early in training the average tracks the weights instead of the random init.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging


class EMA(WeightAveraging):
    def __init__(self, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay

        def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
            # Tensor arithmetic only: no host sync per parameter on GPU.
            n = num_averaged.to(averaged.dtype)
            d = torch.clamp((1 + n) / (10 + n), max=decay) if warmup else torch.full_like(n, decay)
            return torch.lerp(averaged, current, 1 - d)

        super().__init__(avg_fn=avg_fn, use_buffers=True)
