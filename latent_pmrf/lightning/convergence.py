"""Convergence curves during flow training (paper Fig. 1 and 3, Sec. 4.2: FID, DISTS, ... against
training step, and the 5.79× FID speed-up of Latent-PMRF over PMRF).

Every ``every_n_steps`` optimizer steps, and once at the end, a fixed validation set (the first
``num_images`` of ``data.val_dir``, degraded as the validation set is) is restored
with the EMA weights and the same noise (image i's generator is seeded by ``derive_seed(seed, i)``,
whatever the batch size: ``seeding.torch_generator``), and each metric is computed by the same ``MetricSuite`` as
``latent-pmrf evaluate``, on the images as their PNGs would hold them: per-image metrics against
the ground truth (IndRMSE against the posterior-mean output), set metrics against the ground-truth
set's features (computed once). Values go to every logger as ``convergence/<metric>`` and to
``RUN/convergence.csv`` (``step`` + one column per metric; atomic rewrite; on resume, rows after
the resumed step are dropped), which ``latent-pmrf plot-convergence`` reads.

Under DDP every rank restores its own contiguous shard of the set (``val_images.validation_shard``)
and the per-image values and set-metric features are gathered in rank order (``MetricSuite.gather``),
so every rank computes the 1-process numbers; global rank 0 alone logs them and writes the CSV.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch

from ..atomic import write_text_atomic
from ..metrics.base import FeatureMetric, ImageMetric, to_unit_8bit
from ..metrics.registry import missing_weights_reason
from ..metrics.suite import MetricSuite, all_ranks
from ..seeding import torch_generator
from .bfr_data import BFRDataModule
from .ema import EMA
from .restoration_config import BFRDataConfig, ConvergenceConfig


class ConvergenceCallback(L.Callback):
    def __init__(self, cfg: ConvergenceConfig, data: BFRDataConfig,
                 metrics: dict[str, ImageMetric | FeatureMetric] | None = None):
        self.cfg = cfg
        # its own validation set: data.val_dir, the first num_images images (not data.val_limit)
        self.data = replace(data, val_limit=cfg.num_images)
        self._loader = None
        self.metrics = metrics  # given metrics (tests inject untrained backbones) replace cfg.metrics
        self.suite: MetricSuite | None = None  # built lazily; keeps the ground truth's features
        self._last_step = -1

    def _build(self, device: torch.device) -> MetricSuite:
        if self.metrics is not None:
            return MetricSuite(list(self.metrics), device, built=self.metrics)
        names = []
        for name in self.cfg.metrics:
            reason = missing_weights_reason(name)
            if reason and self.cfg.skip_missing:
                warnings.warn(f"convergence: {name} skipped, {reason}", stacklevel=2)
            else:
                names.append(name)
        return MetricSuite(names, device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.cfg.every_n_steps == 0 and step != self._last_step:
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self._measure(trainer, pl_module)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Every rank restores its shard (the gathers are collectives); rank 0 logs and writes."""
        self._last_step = step = trainer.global_step
        if self.suite is None:
            self.suite = self._build(pl_module.device)
        if not self.suite.metrics:
            return
        ema = next((c for c in trainer.callbacks if isinstance(c, EMA)), None)
        was_training = pl_module.training
        pl_module.eval()
        try:
            if ema is not None:
                with ema.swapped_in(pl_module):
                    values = self._evaluate(trainer, pl_module)
            else:
                values = self._evaluate(trainer, pl_module)
        finally:
            pl_module.train(was_training)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({f"convergence/{k}": v for k, v in values.items()}, step=step)
            self._append_csv(Path(trainer.default_root_dir) / "convergence.csv", step, values)

    @torch.no_grad()
    def _evaluate(self, trainer: L.Trainer | None, pl_module: L.LightningModule) -> dict[str, float]:
        """The metrics of the whole set: this rank restores its shard, the suite gathers the rest."""
        device = pl_module.device
        if self._loader is None:
            datamodule = BFRDataModule(self.data)
            datamodule.trainer = trainer  # its rank and world size pick the shard
            datamodule.setup("validate")
            self._loader = datamodule.val_dataloader()
        if self.suite.needs_reference:  # the ground truth's features, once
            self.suite.set_reference((to_unit_8bit(batch["gt"].to(device)) for batch in self._loader),
                                     all_gather=all_ranks)
        self.suite.reset()
        for batch in self._loader:
            gens = [torch_generator(self.cfg.seed, int(i), device=device) for i in batch["index"]]
            restored, posterior_mean = pl_module.pipeline.restore(batch["lq"].to(device), self.cfg.euler_steps,
                                                                  generator=gens)
            self.suite.update(to_unit_8bit(restored), to_unit_8bit(batch["gt"].to(device)),
                              to_unit_8bit(posterior_mean))
        self.suite.gather(all_ranks)
        return self.suite.compute()

    @staticmethod
    def _append_csv(path: Path, step: int, values: dict[str, float]) -> None:
        rows = []
        if path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) < step]
        rows.append({"step": step, **{k: f"{v:.8g}" for k, v in values.items()}})
        columns = ["step", *dict.fromkeys(k for r in rows for k in r if k != "step")]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(path, buf.getvalue())
