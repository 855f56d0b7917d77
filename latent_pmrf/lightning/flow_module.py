"""The LightningModule of Latent-PMRF (flow in a VAE's latent space) and PMRF (pixel space): it
wires a ``RestorationPipeline`` (flow/pipeline.py), handed to it, to the loss, optimizer and logging.

Training (paper Fig. 2, Eqs. 2-3): Z0 = space(clip(f(y))) + σ_s·ε, X1 = space(x),
x_t = t·X1 + (1-t)·Z0 with t stratified over the global batch, loss ‖v(x_t, t) - (X1 - Z0)‖².
Validation, sampling and export use the EMA weights (the EMA callback swaps them in); PMRF's own
code validates with the live weights.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from ..config import from_dict, to_dict
from ..flow import RestorationPipeline, flow_matching_loss, stratified_uniform
from ..flow.rectified_flow import interpolate
from ..models.autoencoder import load_autoencoder
from ..models.state_dict import load_strict
from ..models.swinir import SwinIR, SwinIRConfig, load_swinir_checkpoint
from ..models.velocity import build_velocity
from ..seeding import derive_seed, torch_generator
from .data_logging import log_skipped_files
from .restoration_config import FlowTrainConfig, PosteriorMeanSource
from .val_images import log_image_mean, log_psnr_ssim, save_grid


def load_posterior_mean(source: PosteriorMeanSource) -> SwinIR:
    """A ``posterior_mean`` training checkpoint (EMA weights), or DifFace's released file."""
    path = source.checkpoint
    if path is not None and Path(path).suffix == ".ckpt":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        try:
            cfg = from_dict(SwinIRConfig, ckpt["hyper_parameters"]["config"]["model"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a latent-pmrf posterior_mean checkpoint (no hyper_parameters)") from err
        return load_strict(SwinIR(cfg), {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")},
                           str(path))
    return load_swinir_checkpoint(path, source.model)


def build_pipeline(cfg: FlowTrainConfig) -> RestorationPipeline:
    """The untrained pipeline of a flow training config, with the frozen f(y) and VAE read from
    their files (the only place a flow run opens weight files)."""
    if cfg.space == "latent" and not cfg.vae:
        raise ValueError("space: latent needs `vae`: a Sim-VAE or diffusers AutoencoderKL directory, "
                         "a Hugging Face repo id, or sd15|sdxl|flux|sd3")
    vae = load_autoencoder(cfg.vae) if cfg.space == "latent" else None
    posterior_mean = load_posterior_mean(cfg.posterior_mean)
    if cfg.sirr is not None:  # one estimator per task; none for SIRR means f(y) = y
        source = cfg.sirr.posterior_mean
        posterior_mean = {cfg.task_name: posterior_mean, "sirr": load_posterior_mean(source) if source else None}
    try:
        return RestorationPipeline(posterior_mean, build_velocity(cfg.model), vae,
                                   source_noise_std=cfg.source_noise_std, sampler=cfg.sampler,
                                   vae_sample_posterior=cfg.vae_sample_posterior,
                                   tasks=list(cfg.model.task_embedding.tasks) or [cfg.task_name])
    except ValueError as err:  # channel mismatch: name the config keys
        raise ValueError(f"model.in_channels/out_channels vs {f'vae {cfg.vae}' if vae is not None else 'space: pixel'}: "
                         f"{err}") from err


# Validation's flow-matching loss: Eq. 3 at these t, with the source noise (and VAE posterior
# sample) of each validation batch fixed by (data.seed, its first image's index). It tracks what
# training minimises on held-out images, so it falls as the flow learns, unlike PSNR (which drifts
# away from the posterior mean's as the flow starts to add detail).
VAL_FLOW_T = (0.1, 0.3, 0.5, 0.7, 0.9)


class FlowModule(L.LightningModule):
    ema_target = "pipeline.velocity"

    def __init__(self, config: FlowTrainConfig, pipeline: RestorationPipeline):
        super().__init__()
        self.cfg = config
        self.pipeline = pipeline
        self.save_hyperparameters({"config": to_dict(config), "pipeline": pipeline.config_dict()})
        self._val_rows: list[torch.Tensor] | None = None

    def train(self, mode: bool = True) -> FlowModule:
        super().train(mode)
        self.pipeline.train(mode)  # keeps its frozen nets in eval mode
        return self

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        log_skipped_files(self, batch)
        task_ids = batch.get("task") if self.pipeline.multi_task else None
        x0, x1 = self.pipeline.flow_endpoints(batch["lq"], batch["gt"], task_ids)
        t = stratified_uniform(x0.shape[0], self.global_rank, self.trainer.world_size, device=x0.device)
        loss = flow_matching_loss(self.pipeline.velocity_for(task_ids), x0, x1, t)
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # image i of the validation set draws its noise from (data.seed, i): the same at every
        # validation, whatever the validation batch size
        gens = [torch_generator(self.cfg.data.seed, int(i), device=self.device) for i in batch["index"]]
        restored, posterior_mean = self.pipeline.restore(batch["lq"], self.cfg.val_euler_steps, generator=gens)
        log_psnr_ssim(self, restored, batch["gt"])
        flow_loss, zero_velocity = self._held_out_flow_loss(batch)
        log_image_mean(self, "flow_loss", flow_loss)
        log_image_mean(self, "flow_loss_zero_velocity", zero_velocity)  # the level a flow must get below
        if batch_idx == 0:
            k = min(4, restored.shape[0])
            self._val_rows = [batch["lq"][:k], posterior_mean[:k], restored[:k], batch["gt"][:k]]

    def _held_out_flow_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: mean over ``VAL_FLOW_T`` of ‖v(x_t, t) - (x1 - x0)‖² (Eq. 3), fixed noise; and
        the same loss of v = 0 (‖x1 - x0‖²), the level of a net that has learned nothing yet (the
        zero-initialised output layers start there)."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # training's RNG streams are left as they were
            torch.manual_seed(derive_seed(self.cfg.data.seed, int(batch["index"][0])))
            task_ids = batch.get("task", 0) if self.pipeline.multi_task else None  # validation: the first task's set
            x0, x1 = self.pipeline.flow_endpoints(batch["lq"], batch["gt"], task_ids)
        velocity = self.pipeline.velocity_for(task_ids)
        losses = []
        for t in VAL_FLOW_T:
            tt = torch.full((x0.shape[0],), t, device=x0.device)
            v = velocity(interpolate(x0, x1, tt), tt).float()
            losses.append((v - (x1 - x0).float()).square().flatten(1).mean(1))
        return torch.stack(losses).mean(0), (x1 - x0).float().square().flatten(1).mean(1)

    def on_validation_epoch_end(self) -> None:
        if self._val_rows is not None:
            save_grid(self, self._val_rows, "restoration")
            self._val_rows = None

    def configure_optimizers(self):
        o = self.cfg.optim
        return torch.optim.AdamW(self.pipeline.velocity.parameters(), lr=o.lr, betas=tuple(o.betas),
                                 weight_decay=o.weight_decay, eps=o.eps)
