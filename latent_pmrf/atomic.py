"""Atomic file writes: a finished file or the previous one, never half of one (the writer goes to a
temporary sibling, then ``os.replace`` swaps it in)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions); the previous one is intact.
    (Here, not in lightning/, so that the CLI names it without importing Lightning.)"""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path``; the temporary is removed on error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))
