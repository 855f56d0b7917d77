"""Run (or resume) posterior-mean or flow training from a validated config."""

from __future__ import annotations

from pathlib import Path

from .bfr_data import BFRDataModule
from .fit import fit
from .flow_module import FlowModule
from .posterior_mean_module import PosteriorMeanModule
from .restoration_config import FlowTrainConfig, PosteriorMeanTrainConfig


def fit_posterior_mean(cfg: PosteriorMeanTrainConfig) -> Path:
    o = cfg.optim
    return fit(cfg, PosteriorMeanModule(cfg), BFRDataModule(cfg.data), o.ema_decay, o.ema_warmup, o.grad_clip,
               use_distributed_sampler=False)


def fit_flow(cfg: FlowTrainConfig) -> Path:
    o = cfg.optim
    return fit(cfg, FlowModule(cfg), BFRDataModule(cfg.data), o.ema_decay, o.ema_warmup, o.grad_clip,
               use_distributed_sampler=False)
