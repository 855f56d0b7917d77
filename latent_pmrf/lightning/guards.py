"""A step whose gradients are not finite (NaN/inf loss or overflow) never reaches the optimizer,
so neither the weights nor their EMA are poisoned and the last checkpoint stays good.

``trainer.on_nonfinite: stop`` (default) ends the run with a message naming the step and the
batch's files; ``skip`` drops the step (gradients cleared), counts it (``train/skipped_steps``) and
stops after ``trainer.max_consecutive_skips`` in a row. Both counts live in the checkpoint, so a
resumed run goes on counting (a run of skips that spans the restart still stops it).

Every task's run has this callback (``fit.py``), so it also carries the data pipeline's running
count of skipped files (``data_logging``) through checkpoints.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from .data_logging import load_skipped_files, save_skipped_files


class NonFiniteError(RuntimeError):
    """Training stopped at a non-finite step; the message names the step and its batch."""


def describe_batch(batch, limit: int = 8) -> str:
    """The batch's files (``path``) or dataset indices, for error messages."""
    if isinstance(batch, dict):
        for key in ("path", "index"):
            if key in batch:
                items = [str(v.item() if hasattr(v, "item") else v) for v in batch[key]]
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                return f"{key}s " + ", ".join(items[:limit]) + more
    return "(batch has no path or index)"


class NonFiniteGuard(Callback):
    def __init__(self, policy: str = "stop", max_consecutive_skips: int = 10):
        if policy not in ("stop", "skip"):
            raise ValueError(f"trainer.on_nonfinite must be 'stop' or 'skip', got {policy!r}")
        self.policy, self.max_consecutive = policy, max_consecutive_skips
        self.skipped = self.consecutive = 0
        self._batch = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._batch = batch

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        bad = [name for name, p in pl_module.named_parameters()
               if p.grad is not None and not torch.isfinite(p.grad).all()]
        if not bad:
            self.consecutive = 0
            return
        where = (f"step {trainer.global_step}: non-finite gradients in {bad[0]}"
                 + (f" and {len(bad) - 1} more tensors" if len(bad) > 1 else "") + f"; batch: {describe_batch(self._batch)}")
        if self.policy == "stop":
            raise NonFiniteError(f"{where}. The run stopped before the optimizer step; the last checkpoint is "
                                 "untouched (set trainer.on_nonfinite=skip to drop such steps)")
        for p in pl_module.parameters():
            p.grad = None
        self.skipped += 1
        self.consecutive += 1
        pl_module.log("train/skipped_steps", float(self.skipped))
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(f"{where}. {self.consecutive} non-finite steps in a row "
                                 f"(trainer.max_consecutive_skips={self.max_consecutive}): stopping")

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        save_skipped_files(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        load_skipped_files(trainer, pl_module, checkpoint)
