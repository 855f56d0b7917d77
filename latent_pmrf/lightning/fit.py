"""The one training driver: Trainer, callbacks, loggers and resume, shared by every task."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ..analysis.run_logs import last_checkpoint
from ..atomic import write_text_atomic
from ..config import ConfigError, from_dict, to_dict, to_yaml
from ..seeding import derive_seed
from .checkpoints import (AtomicCheckpointIO, ConfigDriftError, StepCheckpoint, checkpoint_config, config_changes,
                          resume_checkpoint)
from .ema import EMA
from .guards import NonFiniteGuard
from .resume_state import RNGState


class PerRankSeed(Callback):
    """Reseeds Python, NumPy and torch with ``derive_seed(seed, global_rank)`` once the rank is
    known (``setup`` runs in every process before the first step), so ranks draw independent
    noise, posterior samples and t. Weights are initialised before, from ``seed`` alone, and DDP
    broadcasts rank 0's anyway; data order and degradations have their own (seed, epoch, index)
    streams (``EpochIndexSampler``, ``item_rng``) and do not depend on this."""

    def __init__(self, seed: int):
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        L.seed_everything(derive_seed(self.seed, trainer.global_rank), workers=True, verbose=False)


class CompileNet(Callback):
    """``trainer.compile``: compiles the trained network (the module's ``ema_target``) in place once
    the EMA callback, listed before it, has copied the eager network for its average."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from ..models.compile import compile_module

        if stage == "fit":
            compile_module(pl_module.get_submodule(pl_module.ema_target))


class StepProgressBar(RichProgressBar):
    """Rich progress bar whose title counts epochs without a total: step-bounded runs have no
    epoch limit (Lightning's own title reads "Epoch 9/-2" then)."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"Epoch {current_epoch} (step limit {self.trainer.max_steps})"


def with_defaults(schema: type, stored: dict) -> dict:
    """A checkpoint's config through today's schema: a field added since it was written takes its
    default (so a run from before the field existed resumes when the field is left at it). A
    config the schema no longer reads is compared as stored."""
    try:
        return to_dict(from_dict(schema, stored))
    except ConfigError:
        return stored


def fit(task, cfg, **extras) -> Path:
    """Train ``task`` (``tasks.TASKS``) until ``cfg.trainer.max_steps``; returns the output directory.

    With ``trainer.resume`` (default) an existing ``checkpoints/last.ckpt`` is continued (or, if it
    is corrupt, the newest intact ``step*.ckpt``), so a re-run of the same command after a crash or
    pre-emption loses at most ``checkpoint_every_n_steps`` steps; a re-run whose config changed
    more than how long or where it runs is refused with the changed keys. Checkpoint writes are
    atomic (``checkpoints.AtomicCheckpointIO``); the config in use is written to
    ``OUTPUT/config.yaml``.

    The module and datamodule are built after seeding with ``trainer.seed``, so weight
    initialisation is reproducible; each rank then continues with its own seed (``PerRankSeed``).
    """
    t, o = cfg.trainer, cfg.optim
    out = Path(t.output_dir)
    resume_from = resume_checkpoint(out) if t.resume else None
    if resume_from is not None:
        stored = checkpoint_config(resume_from)
        changed = config_changes(with_defaults(type(cfg), stored), to_dict(cfg)) if stored is not None else {}
        if changed:
            diff = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in changed.items()))
            raise ConfigDriftError(f"{resume_from} was trained with another config ({diff}); resume with the same "
                                   f"values (only how long and where it runs may change), or train into a new "
                                   f"trainer.output_dir")
    L.seed_everything(t.seed, workers=True, verbose=False)
    module, datamodule, callbacks = task.build(cfg, **extras)
    if rank_zero_only.rank == 0:  # from RANK / LOCAL_RANK / SLURM_PROCID: the Trainer does not exist yet
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", to_yaml(cfg))  # the config in use: checked against the checkpoint

    checkpoint = StepCheckpoint(dirpath=out / "checkpoints", filename="step{step:08d}", auto_insert_metric_name=False,
                                 every_n_train_steps=t.checkpoint_every_n_steps, save_top_k=1, save_last=True,
                                 save_on_train_epoch_end=True)
    callbacks = [PerRankSeed(t.seed), RNGState(t.seed), NonFiniteGuard(t.on_nonfinite, t.max_consecutive_skips),
                 *callbacks, checkpoint, LearningRateMonitor("step")]
    if o.ema_decay is not None:
        callbacks.insert(0, EMA(o.ema_decay, o.ema_warmup))
    if t.compile:
        callbacks.insert(1 if o.ema_decay is not None else 0, CompileNet())
    if t.progress_bar:
        callbacks.append(StepProgressBar())
    validate = t.val_every_n_steps > 0
    trainer = L.Trainer(
        default_root_dir=out,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=o.grad_clip,
        # val_check_interval counts batches; one optimizer step takes accumulate_grad_batches of them.
        val_check_interval=t.val_every_n_steps * t.accumulate_grad_batches if validate else None,
        limit_val_batches=None if validate else 0,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        callbacks=callbacks,
        logger=[CSVLogger(out, name="csv"), TensorBoardLogger(out, name="tensorboard", version="")],
        enable_progress_bar=t.progress_bar,
        enable_model_summary=t.progress_bar,
        use_distributed_sampler=False,  # every datamodule shards ranks itself (EpochIndexSampler)
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(module, datamodule, ckpt_path=resume_from)
    return out
