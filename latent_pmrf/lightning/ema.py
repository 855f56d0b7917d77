"""Exponential moving average of the trained network only (frozen VAEs, posterior-mean models and
loss networks are neither copied nor averaged).

The LightningModule names its trained submodule in ``ema_target`` (e.g. ``"vae"``,
``"pipeline.velocity"``).
The average is swapped in for validation, copied into the model when training ends, and stored as
the checkpoint's ``state_dict`` entries of that submodule, so every consumer of a checkpoint
(``export-vae``, ``restore``) gets EMA weights; the live weights go to ``current_model_state``
and both are restored on resume. The decay follows the official Sim-VAE training (diffusers'
``EMAModel``): ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early in training the
average tracks the weights instead of the random init; ``warmup=False`` gives a constant decay
(torch_ema, as PMRF).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_avg_fn(decay: float, warmup: bool):
    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():  # integer buffers (e.g. index tables) are copied
            return current
        # Tensor arithmetic only: no host sync per parameter on GPU.
        n = num_averaged.to(averaged.dtype)
        d = torch.clamp((1 + n) / (10 + n), max=decay) if warmup else torch.full_like(n, decay)
        return torch.lerp(averaged, current, 1 - d)

    return avg_fn


class EMA(L.Callback):
    def __init__(self, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.avg_fn = ema_avg_fn(decay, warmup)
        self.average: AveragedModel | None = None
        self._last_step = 0
        self._live_at_end: dict[str, torch.Tensor] | None = None  # live weights, once on_train_end replaced them

    @staticmethod
    def _target(pl_module: L.LightningModule) -> tuple[str, nn.Module]:
        """(dotted name, module) of the submodule named by the module's ``ema_target``."""
        name = getattr(pl_module, "ema_target", None)
        try:
            return name, pl_module.get_submodule(name)
        except (AttributeError, TypeError) as err:
            raise AttributeError(f"{type(pl_module).__name__} must name its trained submodule in `ema_target`, "
                                 f"got {name!r}") from err

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            _, target = self._target(pl_module)
            self.average = AveragedModel(target, avg_fn=self.avg_fn, use_buffers=True)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.average.to(pl_module.device)  # the strategy has placed the model by now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self._last_step:  # one update per optimizer step
            self.average.update_parameters(self._target(pl_module)[1])
            self._last_step = trainer.global_step

    def _swap(self, pl_module: L.LightningModule) -> None:
        target = self._target(pl_module)[1]
        with torch.no_grad():
            for avg, cur in zip(self._tensors(self.average.module), self._tensors(target)):
                tmp = avg.detach().clone()
                avg.copy_(cur)
                cur.copy_(tmp)

    @contextmanager
    def swapped_in(self, pl_module: L.LightningModule) -> Iterator[None]:
        """The EMA weights in the model for the duration of the block (for sampling mid-training)."""
        if self.average is None:
            yield
            return
        self._swap(pl_module)
        try:
            yield
        finally:
            self._swap(pl_module)

    @staticmethod
    def _tensors(module: nn.Module):
        yield from module.parameters()
        yield from module.buffers()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.average is not None:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.average is not None:
            self._swap(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        """Leave the EMA weights in the model, for whatever uses it after ``fit``. The live weights are
        kept aside for any checkpoint written after this (Lightning's ``ModelCheckpoint`` may write
        ``last.ckpt`` from its own ``on_train_end``, which runs after this one; ``fit``'s
        ``StepCheckpoint`` saves the final step before): a run resumed from it to train longer must
        continue from them, not from the EMA."""
        target = self._target(pl_module)[1]
        self._live_at_end = {k: v.detach().clone() for k, v in target.state_dict().items()}
        with torch.no_grad():
            for avg, cur in zip(self._tensors(self.average.module), self._tensors(target)):
                cur.copy_(avg)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self.average is None:
            return
        prefix = self._target(pl_module)[0] + "."
        state = checkpoint["state_dict"]
        if self._live_at_end is None:
            checkpoint["current_model_state"] = {k: v for k, v in state.items() if k.startswith(prefix)}
        else:
            checkpoint["current_model_state"] = {prefix + k: v for k, v in self._live_at_end.items()}
        for k, v in self.average.module.state_dict().items():
            state[prefix + k] = v
        checkpoint["ema_state"] = {"n_averaged": self.average.n_averaged.detach().cpu(), "last_step": self._last_step}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self.average is None or "current_model_state" not in checkpoint:
            return
        prefix, target = self._target(pl_module)
        prefix += "."
        # Lightning has loaded state_dict (the EMA) into the model; put the live weights back.
        ema = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        self.average.module.load_state_dict(ema)
        target.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["current_model_state"].items()})
        ema_state = checkpoint.get("ema_state", {})
        if "n_averaged" in ema_state:
            self.average.n_averaged.copy_(ema_state["n_averaged"])
        self._last_step = int(ema_state.get("last_step", checkpoint.get("global_step", 0)))
