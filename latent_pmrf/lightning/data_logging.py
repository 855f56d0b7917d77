"""Logging what the data pipeline did, so that nothing is dropped silently."""

from __future__ import annotations

import lightning as L


def log_skipped_files(module: L.LightningModule, batch: dict) -> None:
    """Log ``data/skipped_files``: unreadable training images skipped so far, summed over ranks.

    Datasets built on ``ImageFiles(on_read_error="skip")`` put per-item skip counts in
    ``batch["skipped"]``; each skip is also a warning naming the file.
    """
    skipped = batch.get("skipped")
    if skipped is None:
        return
    module.skipped_files = getattr(module, "skipped_files", 0) + int(skipped.sum())
    module.log("data/skipped_files", float(module.skipped_files), reduce_fx="sum", sync_dist=True)
