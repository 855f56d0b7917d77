"""Logging what the data pipeline did, so that nothing is dropped silently."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

CHECKPOINT_KEY = "skipped_files"  # the running count of all ranks, summed


def log_skipped_files(module: L.LightningModule, batch: dict) -> None:
    """Log ``data/skipped_files``: training images skipped so far (unreadable, or smaller than the
    crop under ``data.small_images=skip``), summed over ranks and carried through checkpoints
    (``save_skipped_files``/``load_skipped_files``).

    Datasets built on ``ImageFiles(on_read_error="skip")`` put per-item skip counts in
    ``batch["skipped"]``; each skip is also a warning naming the file.
    """
    skipped = batch.get("skipped")
    if skipped is None:
        return
    module.skipped_files = getattr(module, "skipped_files", 0) + int(skipped.sum())
    module.log("data/skipped_files", float(module.skipped_files), reduce_fx="sum", sync_dist=True)


def save_skipped_files(trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Put the count of every rank, summed, in ``checkpoint`` (every rank calls this: a collective)."""
    count = torch.tensor(getattr(module, "skipped_files", 0), dtype=torch.long, device=module.device)
    checkpoint[CHECKPOINT_KEY] = int(trainer.strategy.reduce(count, reduce_op="sum"))


def load_skipped_files(trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Continue the count of ``checkpoint``: rank 0 takes the sum, the others start from 0, so the
    logged sum over ranks goes on from where it stood (on any number of ranks)."""
    module.skipped_files = int(checkpoint.get(CHECKPOINT_KEY, 0)) if trainer.global_rank == 0 else 0
