"""Convergence curves during flow training (paper Fig. 1 and 3, Sec. 4.2: FID, DISTS, ... against
training step, and the 5.79× FID speed-up of Latent-PMRF over PMRF).

Every ``every_n_steps`` optimizer steps, and once at the end, a fixed validation set (the first
``num_images`` of ``data.val_dir``, degraded as the validation set is) is restored
with the EMA weights and the same noise (image i's generator is seeded by (seed, i)), and each
metric is computed against its ground truth: per-image metrics are aggregated as in
``latent-pmrf evaluate``, set metrics compare the restored set's features with the ground-truth
set's (computed once). Values go to every logger as ``convergence/<metric>`` and to
``RUN/convergence.csv`` (``step`` + one column per metric; atomic rewrite; on resume, rows after
the resumed step are dropped), which ``latent-pmrf plot-convergence`` reads.

Computed on global rank 0 on the whole (unsharded) validation set; other ranks wait at a barrier.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..atomic import write_text_atomic
from ..metrics.base import FeatureMetric, ImageMetric
from ..metrics.registry import build_metrics, missing_weights
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
        self.metrics = metrics  # built lazily on rank 0 unless given (tests inject untrained backbones)
        self._gt_features: dict[int, np.ndarray] = {}
        self._last_step = -1

    def _build(self, device: torch.device) -> dict[str, ImageMetric | FeatureMetric]:
        names = []
        for name in self.cfg.metrics:
            absent = missing_weights(name)
            if absent and self.cfg.skip_missing:
                warnings.warn(f"convergence: {name} skipped, weights missing: {', '.join(absent)} "
                              "(`latent-pmrf weights check` says where each file goes)", stacklevel=2)
            else:
                names.append(name)
        return build_metrics(names, device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.cfg.every_n_steps == 0 and step != self._last_step:
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self._measure(trainer, pl_module)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = step = trainer.global_step
        if trainer.is_global_zero:
            if self.metrics is None:
                self.metrics = self._build(pl_module.device)
            if self.metrics:
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
                for logger in trainer.loggers:
                    logger.log_metrics({f"convergence/{k}": v for k, v in values.items()}, step=step)
                self._append_csv(Path(trainer.default_root_dir) / "convergence.csv", step, values)
        trainer.strategy.barrier()

    @torch.no_grad()
    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        per_image: dict[str, list[np.ndarray]] = {n: [] for n, m in self.metrics.items() if isinstance(m, ImageMetric)}
        pred_features: dict[int, list[np.ndarray]] = {}
        gt_features: dict[int, list[np.ndarray]] = {}
        extractors = {n: id(getattr(m, "extractor", m)) for n, m in self.metrics.items() if isinstance(m, FeatureMetric)}
        if self._loader is None:
            datamodule = BFRDataModule(self.data)
            datamodule.setup("validate")
            self._loader = datamodule.val_dataloader()
        seen = 0
        for batch in self._loader:
            lq, gt = batch["lq"].to(pl_module.device), batch["gt"].to(pl_module.device)
            take = lq.shape[0]
            gens = [torch.Generator(device=pl_module.device).manual_seed(self.cfg.seed * 100_003 + seen + i)
                    for i in range(take)]
            restored, _ = pl_module.restore(lq, self.cfg.euler_steps, generator=gens)
            pred01, gt01 = (torch.round((x.float() + 1) * 127.5) / 255 for x in (restored, gt))  # the 8-bit grid
            seen += take
            for name, metric in self.metrics.items():
                if isinstance(metric, ImageMetric):
                    ref = None if metric.info.reference == "none" else gt01
                    per_image[name].append(np.asarray(metric(pred01, ref), np.float64).reshape(-1))
            for key in dict.fromkeys(extractors.values()):  # FD- and MMD-DINOv2 share one embedding
                metric = next(self.metrics[n] for n, k in extractors.items() if k == key)
                pred_features.setdefault(key, []).append(metric.features(pred01))
                if key not in self._gt_features:
                    gt_features.setdefault(key, []).append(metric.features(gt01))
        for key, feats in gt_features.items():
            self._gt_features[key] = np.concatenate(feats)
        values = {name: self.metrics[name].aggregate(np.concatenate(v)) for name, v in per_image.items()}
        for name, key in extractors.items():
            values[name] = self.metrics[name].distance(np.concatenate(pred_features[key]), self._gt_features[key])
        return {name: float(values[name]) for name in self.metrics}

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
