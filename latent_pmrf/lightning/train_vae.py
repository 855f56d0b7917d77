"""Run (or resume) a Sim-VAE training job from a validated ``VAETrainConfig``."""

from __future__ import annotations

from pathlib import Path

from .fit import fit, last_checkpoint, read_logged_metrics  # noqa: F401  (re-exported)
from .vae_config import VAETrainConfig
from .vae_data import VAEDataModule
from .vae_module import VAEModule


def fit_vae(cfg: VAETrainConfig, val_lpips: bool = True) -> Path:
    """Train until ``trainer.max_steps`` (resuming from ``last.ckpt``); returns the output directory."""
    return fit(cfg, lambda: VAEModule(cfg, val_lpips=val_lpips), lambda: VAEDataModule(cfg.data), cfg.optim.ema_decay,
               cfg.optim.ema_warmup, cfg.optim.grad_clip)
