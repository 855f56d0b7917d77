"""The random streams of training, in every checkpoint: a run killed mid-epoch and re-run continues
bitwise as if it had never stopped (the data position travels beside it, in Lightning's loop state,
through ``data.samplers.ResumableLoader``).

Training draws source noise ε, VAE posterior samples and flow times t from the global generators
(Python, NumPy, torch CPU and CUDA), each rank from its own stream (``fit.PerRankSeed``). ``RNGState``
takes the state of those generators after each training batch (``on_train_batch_end``) and puts it
back before the next (``on_train_batch_start``), so what runs between two batches (validation, the
convergence callback, a new epoch's dataloader iterator, which draws its base seed from torch's
generator, a restart) neither advances the training stream nor depends on whether the run was
restarted. A checkpoint holds every rank's stream (gathered from all ranks; rank 0 writes); on
resume each rank takes its own back. A run resumed on another number of ranks cannot continue the
streams: it says so and seeds rank r from (seed, r, step).
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from ..seeding import derive_seed

CHECKPOINT_KEY = "rng_streams"  # [one state per global rank]


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global generators' state, in types ``torch.load(weights_only=True)`` reads."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "gauss": float(gauss)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather(trainer: L.Trainer, state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``state``, in rank order (each rank dumps the checkpoint; rank 0 writes it)."""
    if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [state]
    states: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(states, state)
    return states


class RNGState(Callback):
    """Saves and restores each rank's training random stream (see the module docstring)."""

    def __init__(self, seed: int):
        self.seed = seed
        self._stream: dict[str, Any] | None = None  # after the last training batch, or loaded from a checkpoint

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._stream is not None:
            set_rng_state(self._stream, pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._stream = rng_state(pl_module.device)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = _gather(trainer, self._stream or rng_state(pl_module.device))

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        streams = checkpoint.get(CHECKPOINT_KEY)
        if streams is not None and len(streams) == trainer.world_size:
            self._stream = streams[trainer.global_rank]
            return
        step = int(checkpoint.get("global_step", 0))
        found = "no random streams" if streams is None else f"the random streams of {len(streams)} ranks"
        warnings.warn(f"the checkpoint holds {found}; this run has {trainer.world_size}: each rank continues from "
                      f"a new seed (seed, rank, step={step}), so the run is not a bitwise continuation", stacklevel=2)
        L.seed_everything(derive_seed(self.seed, trainer.global_rank, step), workers=True, verbose=False)
