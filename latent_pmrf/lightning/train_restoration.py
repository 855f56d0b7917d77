"""Run (or resume) posterior-mean or flow training from a validated config."""

from __future__ import annotations

from pathlib import Path

from .bfr_data import BFRDataModule
from .convergence import ConvergenceCallback
from .fit import fit
from .flow_module import FlowModule
from .posterior_mean_module import PosteriorMeanModule
from .restoration_config import FlowTrainConfig, PosteriorMeanTrainConfig


def fit_posterior_mean(cfg: PosteriorMeanTrainConfig) -> Path:
    o = cfg.optim
    return fit(cfg, lambda: PosteriorMeanModule(cfg), lambda: BFRDataModule(cfg.data), o.ema_decay, o.ema_warmup,
               o.grad_clip, use_distributed_sampler=False)


def fit_flow(cfg: FlowTrainConfig, convergence_metrics: dict | None = None) -> Path:
    """``convergence_metrics``: already-built metrics for the convergence callback (tests)."""
    o = cfg.optim
    callbacks = []
    if cfg.convergence.every_n_steps > 0:
        if not cfg.data.val_dir:
            raise ValueError("convergence.every_n_steps > 0 needs data.val_dir (the fixed validation set)")
        callbacks.append(ConvergenceCallback(cfg.convergence, cfg.data, convergence_metrics))
    return fit(cfg, lambda: FlowModule(cfg), lambda: BFRDataModule(cfg.data), o.ema_decay, o.ema_warmup,
               o.grad_clip, callbacks=callbacks, use_distributed_sampler=False)
