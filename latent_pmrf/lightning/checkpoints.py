"""Checkpoints that never truncate, and a resume that never starts over by accident.

- ``AtomicCheckpointIO``: every checkpoint goes to a temporary file in the same folder, is fsynced,
  read back (``readable``) and only then renamed over the target, so a kill, a full disk or a writer
  that silently produced garbage leaves the previous file intact (Lightning's own writer opens the
  target and streams into it). A failed write names the file and stops the run before
  ``ModelCheckpoint``'s retention (``save_top_k``) deletes the checkpoint it would have replaced:
  the last good checkpoint is never the one removed.
- ``StepCheckpoint``: a checkpoint every n steps and one of the final step, even when training
  ends between two (Lightning's ``ModelCheckpoint`` then kept only the last interval's: the steps
  after it were trained, logged, and lost), written as an interval's is, so that a run given a
  larger ``max_steps`` continues bitwise.
- ``resume_checkpoint``: the checkpoint a re-run continues from: ``last.ckpt`` if it reads, else
  the newest intact ``step*.ckpt`` (saying so), else a clear error; never a silent restart from
  step 0 over an existing run.
- ``config_changes``: what a re-run changed against the config the checkpoint was trained with;
  only operational keys (devices, logging, intervals, ``max_steps``, ...) may change on resume.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from ..atomic import CheckpointWriteError
from ..flow.pipeline import torch_load_problem

# Keys a resumed run may change: how and how long it runs, not what it trains.
RESUMABLE = ("trainer.max_steps", "trainer.devices", "trainer.num_nodes", "trainer.accelerator", "trainer.strategy",
             "trainer.progress_bar", "trainer.log_every_n_steps", "trainer.val_every_n_steps",
             "trainer.checkpoint_every_n_steps", "trainer.output_dir", "trainer.resume", "data.num_workers",
             "data.cache_images", "sirr.data.cache_images",
             "data.val_batch_size", "data.val_limit", "convergence.every_n_steps", "convergence.metrics",
             "convergence.skip_missing", "val_euler_steps", "trainer.compile", "model.activation_checkpointing")


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint(every_n_train_steps=n, save_last=True)`` that also saves the step training
    ends on (``max_steps``), at that batch's end like any interval's. Lightning alone writes
    ``last.ckpt`` at the end only if no checkpoint was written at all, and then from ``on_train_end``,
    whose loop state marks the unfinished epoch as done: with ``max_steps`` not a multiple of n the
    final steps were missing (from what ``export-vae``/``restore`` read), or a run given more steps
    resumed one epoch on, with other data."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.save_last and trainer.global_step >= trainer.max_steps > 0 \
                and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            problem = read_error(tmp)
            if problem is not None:
                raise CheckpointWriteError(f"cannot write checkpoint {path}: the written file does not read back "
                                           f"({problem}); the previous checkpoint, if any, is intact")
            os.replace(tmp, path)
        except CheckpointWriteError:
            raise
        except OSError as err:
            error = CheckpointWriteError(f"cannot write checkpoint {path}: {err.strerror or err} "
                                         f"(the previous checkpoint, if any, is intact)")
            error.errno = err.errno  # ENOSPC, EACCES, ... for callers that tell them apart
            raise error from err
        finally:
            tmp.unlink(missing_ok=True)


def read_error(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint (its zip directory and pickled header do not read),
    in one line; None if it is one."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return None
    except Exception as err:  # truncated zip, garbage, wrong format: all mean "not usable"
        return torch_load_problem(path, err)


def readable(path: Path) -> bool:
    """Whether ``path`` is a complete checkpoint (its zip directory and pickled header read)."""
    return read_error(path) is None


def resume_checkpoint(output_dir: Path) -> Path | None:
    """The newest intact checkpoint of a run folder (``checkpoints/last.ckpt``, ``checkpoints/step*.ckpt``,
    or the ``hpc_ckpt_N.ckpt`` Lightning writes on SLURM's SIGUSR1), or None for a new run."""
    folder = output_dir / "checkpoints"
    candidates = sorted([*folder.glob("*.ckpt"), *output_dir.glob("hpc_ckpt_*.ckpt")],
                        key=lambda p: p.stat().st_mtime, reverse=True)
    if not candidates:
        return None
    broken = []
    for path in candidates:
        if readable(path):
            if broken:
                warnings.warn(f"{', '.join(map(str, broken))} truncated or corrupt; resuming from {path} instead",
                              stacklevel=2)
            return path
        broken.append(path)
    raise RuntimeError(f"no intact checkpoint to resume from in {output_dir} ({', '.join(map(str, broken))} "
                       "unreadable); move the folder away to start a new run, or set trainer.resume=false to start "
                       "over in it")


class ConfigDriftError(ValueError):
    """A re-run's config differs from its checkpoint's beyond ``RESUMABLE``; the message lists the keys."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """{key: (old, new)} of the keys that differ and may not change on resume."""
    before, after = _flatten(old), _flatten(new)
    changed = {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}
    return {k: v for k, v in changed.items() if not any(k == r or k.startswith(r + ".") for r in RESUMABLE)}


def checkpoint_config(path: Path) -> dict | None:
    """The training config stored in a checkpoint's hyper_parameters (None if absent)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return (ckpt.get("hyper_parameters") or {}).get("config")
