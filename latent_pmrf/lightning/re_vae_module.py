"""LightningModule of re-VAE fine-tuning (GenSIRR Stage I): wires the handed Sim-VAE, its LoRA or
full fine-tuning, L_recon + λ·L_equiv, the optimizer and the held-out equivariance logging."""

from __future__ import annotations

import lightning as L
import torch
from torch.optim.lr_scheduler import LambdaLR

from ..config import from_dict, to_dict
from ..losses.equivariance import ReVAELoss, superposition_metrics
from ..models.lora import prepare_finetuning
from ..models.sim_vae import SimVAE
from .data_logging import log_skipped_files
from .lr_schedule import warmup_cosine
from .re_vae_config import ReVAETrainConfig
from .val_images import save_grid


def pairing(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(distinct images, background index, reflection index) of a training batch: a background
    and a reflection batch side by side, or one batch and a random non-zero cyclic shift of itself
    (a derangement of the shuffled batch: unlike ``randperm``, no image is mixed with itself)."""
    if "reflection" in batch:
        n = batch["background"].shape[0]
        index = torch.arange(n, device=batch["background"].device)
        return torch.cat([batch["background"], batch["reflection"]]), index, index + n
    images = batch["image"]
    n = images.shape[0]
    index = torch.arange(n, device=images.device)
    shift = int(torch.randint(1, n, ()))
    return images, index, (index + shift) % n


class ReVAEModule(L.LightningModule):
    ema_target = "vae"  # LoRA: the adapters change, the frozen base is averaged to itself

    def __init__(self, config: ReVAETrainConfig | dict, vae: SimVAE):
        super().__init__()
        cfg = config if isinstance(config, ReVAETrainConfig) else from_dict(ReVAETrainConfig, config)
        # Plain dicts (torch.load(weights_only=True)); `model` rebuilds the network for export-vae.
        self.save_hyperparameters({"config": to_dict(cfg), "model": to_dict(vae.config)})
        self.cfg = cfg
        self.vae = vae
        prepare_finetuning(self.vae, cfg.modules, cfg.lora_or_none)
        self.loss = ReVAELoss(cfg.loss)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        log_skipped_files(self, batch)
        images, background_index, reflection_index = pairing(batch)
        alpha = torch.rand(background_index.shape[0], device=images.device)  # α ~ U[0, 1] per mixture
        terms = self.loss(self.vae, images, background_index, reflection_index, alpha)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, prog_bar=False)
        self.log("loss", terms["total"].detach(), prog_bar=True, logger=False)
        return terms["total"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        metrics = superposition_metrics(self.vae, batch["background"], batch["reflection"], batch["alpha"])
        n = batch["alpha"].shape[0]
        self.log("val/equivariance_error", metrics["equivariance_error"].mean().float(), batch_size=n, sync_dist=True)
        self.log("val/psnr", metrics["psnr"].mean().float(), batch_size=n, sync_dist=True)
        if batch_idx == 0:
            k = min(n, 4)
            rows = [metrics["mixture"][:k], metrics["reconstruction"][:k]]
            save_grid(self, rows, "val", tag="val/mixture_reconstruction")

    def configure_optimizers(self):
        o = self.cfg.optim
        params = [p for p in self.vae.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)
        cosine_steps, min_lr = (o.cosine_steps, o.min_lr) if o.cosine_steps is not None else (1, o.lr)

        def factor(step: int) -> float:  # warm-up from 0, then constant or cosine
            return warmup_cosine(step, o.lr, o.warmup_steps, 0.0, cosine_steps, min_lr) / o.lr

        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}}
