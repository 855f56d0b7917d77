"""LightningModule for the posterior-mean estimator f(y) ≈ E[x|y] (paper Sec. 2.2, step 1)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from ..config import from_dict, to_dict
from ..models.swinir import SwinIR, load_swinir_checkpoint
from .data_logging import log_skipped_files
from .restoration_config import PosteriorMeanTrainConfig
from .val_images import log_psnr_ssim, save_grid


class PosteriorMeanModule(L.LightningModule):
    ema_target = "net"

    def __init__(self, config: PosteriorMeanTrainConfig | dict):
        super().__init__()
        cfg = config if isinstance(config, PosteriorMeanTrainConfig) else from_dict(PosteriorMeanTrainConfig, config)
        self.save_hyperparameters({"config": to_dict(cfg)})
        self.cfg = cfg
        self.net = (load_swinir_checkpoint(cfg.init_checkpoint, cfg.model).train() if cfg.init_checkpoint
                    else SwinIR(cfg.model))
        self._val_rows: list[torch.Tensor] | None = None

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.net(lq)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        log_skipped_files(self, batch)
        pred = self.net(batch["lq"])
        loss_fn = F.l1_loss if self.cfg.loss == "l1" else F.mse_loss
        loss = loss_fn(pred.float(), batch["gt"].float())
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred = self.net(batch["lq"]).clamp(-1, 1)
        log_psnr_ssim(self, pred, batch["gt"])
        if batch_idx == 0:
            k = min(4, pred.shape[0])
            self._val_rows = [batch["lq"][:k], pred[:k], batch["gt"][:k]]

    def on_validation_epoch_end(self) -> None:
        if self._val_rows is not None:
            save_grid(self, self._val_rows, "posterior_mean")
            self._val_rows = None

    def configure_optimizers(self):
        o = self.cfg.optim
        return torch.optim.AdamW(self.net.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                                 eps=o.eps)
