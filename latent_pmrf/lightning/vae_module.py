"""LightningModule for Sim-VAE training: wires model, loss (Eq. 9), optimizer and logging."""

from __future__ import annotations

import logging

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from ..config import from_dict, to_dict
from ..losses.lpips_net import build_lpips
from ..losses.patch_gan import PatchDiscriminator, discriminator_hinge_loss, generator_hinge_loss
from ..losses.perceptual import VGGPerceptualLoss
from ..models.sim_vae import SimVAE
from .data_logging import log_skipped_files
from .lr_schedule import warmup_cosine
from .val_images import log_image_mean, log_psnr_ssim, save_grid
from .vae_config import VAETrainConfig

log = logging.getLogger(__name__)


class VAEModule(L.LightningModule):
    ema_target = "vae"  # the EMA callback averages only the autoencoder

    def __init__(self, config: VAETrainConfig | dict, val_lpips: bool = True):
        super().__init__()
        cfg = config if isinstance(config, VAETrainConfig) else from_dict(VAETrainConfig, config)
        # Plain dict, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters({"config": to_dict(cfg), "val_lpips": val_lpips})
        self.cfg = cfg
        self.vae = SimVAE(cfg.model)
        loss = cfg.loss
        self.perceptual = (
            VGGPerceptualLoss(loss.perceptual_layers, pretrained=loss.vgg_pretrained) if loss.perceptual_weight > 0 else None
        )
        self.lpips_loss = build_lpips("vgg") if loss.lpips_weight > 0 else None
        self.discriminator = PatchDiscriminator(cfg.model.out_channels) if loss.gan_weight > 0 else None
        self.val_lpips = self._try_val_lpips() if val_lpips else None
        self._val_rows: list[torch.Tensor] | None = None

    def _try_val_lpips(self):
        try:
            return self.lpips_loss or build_lpips("vgg")
        except FileNotFoundError as err:
            log.warning("validation LPIPS is skipped: %s", err)
            return None

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cfg = self.cfg.loss
        x = batch["image"]
        log_skipped_files(self, batch)
        recon, posterior = self.vae(x, sample_posterior=True)
        terms = {
            "l1": F.l1_loss(recon.float(), x.float()),
            # KL summed over latent elements, averaged over the batch (LDM / official code).
            "kl": posterior.kl().mean(),
        }
        total = cfg.l1_weight * terms["l1"] + cfg.kl_weight * terms["kl"]
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(recon.float(), x.float()).mean()
            total = total + cfg.perceptual_weight * terms["perceptual"]
        if self.lpips_loss is not None:
            terms["lpips"] = self.lpips_loss(recon.float(), x.float()).mean()
            total = total + cfg.lpips_weight * terms["lpips"]
        if self.discriminator is not None and self.global_step >= cfg.gan_start_step:
            terms["gan_g"] = generator_hinge_loss(self.discriminator, recon)
            terms["gan_d"] = discriminator_hinge_loss(self.discriminator, x, recon)
            total = total + cfg.gan_weight * terms["gan_g"] + terms["gan_d"]
        terms["total"] = total
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, prog_bar=False)
        self.log("loss", total.detach(), prog_bar=True, logger=False)
        return total

    # ------------------------------------------------------------------ validation (EMA weights)
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = batch["image"]
        recon = self.vae.decode(self.vae.encode(x).mode()).clamp(-1, 1)
        n = x.shape[0]
        log_psnr_ssim(self, recon, x)
        if self.val_lpips is not None:
            log_image_mean(self, "lpips", self.val_lpips(recon.float(), x.float()).flatten())
        if batch_idx == 0:
            k = min(n, 4)
            self._val_rows = [x[:k], recon[:k]]

    def on_validation_epoch_end(self) -> None:
        if self._val_rows is not None:
            save_grid(self, self._val_rows, "val", tag="val/reconstruction")
            self._val_rows = None

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        o = self.cfg.optim
        groups = [{"params": [p for p in self.vae.parameters() if p.requires_grad], "lr": o.lr}]
        lambdas = [lambda step: warmup_cosine(step, o.lr, o.warmup_steps, o.warmup_start_lr, o.cosine_steps, o.min_lr) / o.lr]
        if self.discriminator is not None:
            groups.append({"params": list(self.discriminator.parameters()), "lr": self.cfg.loss.disc_lr})
            lambdas.append(lambda step: 1.0)
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)
        scheduler = LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
