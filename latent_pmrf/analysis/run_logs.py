"""What a training run leaves in its output folder, read without Lightning: the logged metrics of
every launch (``csv/version_N/metrics.csv``) and the checkpoint a re-run resumes from."""

from __future__ import annotations

import csv
from pathlib import Path


def last_checkpoint(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints" / "last.ckpt"


def read_logged_metrics(output_dir: str | Path) -> list[dict[str, str]]:
    """Rows of every launch's ``csv/version_N/metrics.csv`` (a resumed run logs to a new version:
    Lightning's CSVLogger would otherwise delete the earlier file), in launch order."""
    versions = sorted(Path(output_dir).glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    rows = []
    for path in versions:
        with path.open() as f:
            rows.extend(csv.DictReader(f))
    return rows
