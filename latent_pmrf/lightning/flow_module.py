"""One LightningModule for Latent-PMRF (flow in a VAE's latent space) and PMRF (pixel space).

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
from ..flow import LatentSpace, PixelSpace, flow_matching_loss, sample_euler, source_sample, stratified_uniform
from ..models.autoencoder import autoencoder_config, autoencoder_from_config, load_autoencoder
from ..models.velocity import build_velocity
from ..models.swinir import SwinIR, SwinIRConfig, load_swinir_checkpoint
from .data_logging import log_skipped_files
from .restoration_config import FlowTrainConfig, PosteriorMeanSource
from .val_images import log_psnr_ssim, save_grid


def load_posterior_mean(source: PosteriorMeanSource) -> SwinIR:
    """A ``posterior_mean`` training checkpoint (EMA weights), or DifFace's released file."""
    path = source.checkpoint
    if path is not None and Path(path).suffix == ".ckpt":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        try:
            cfg = from_dict(SwinIRConfig, ckpt["hyper_parameters"]["config"]["model"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a latent-pmrf posterior_mean checkpoint (no hyper_parameters)") from err
        net = SwinIR(cfg)
        net.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
        return net
    return load_swinir_checkpoint(path, source.model)


class FlowModule(L.LightningModule):
    ema_target = "velocity"

    def __init__(self, config: FlowTrainConfig | dict, frozen_configs: dict | None = None):
        """``frozen_configs`` (from a flow checkpoint) builds the frozen VAE and posterior-mean
        architectures without reading their weight files: the checkpoint carries their weights."""
        super().__init__()
        cfg = config if isinstance(config, FlowTrainConfig) else from_dict(FlowTrainConfig, config)
        self.cfg = cfg
        latent = cfg.space == "latent"
        if frozen_configs is None:
            if latent and not cfg.vae:
                raise ValueError("space: latent needs `vae`: a Sim-VAE or diffusers AutoencoderKL directory, "
                                 "a Hugging Face repo id, or sd15|sdxl|flux|sd3")
            pm = load_posterior_mean(cfg.posterior_mean)
            vae = load_autoencoder(cfg.vae) if latent else None
        else:
            pm = SwinIR(from_dict(SwinIRConfig, frozen_configs["posterior_mean"]))
            vae = autoencoder_from_config(frozen_configs["vae"], "frozen_configs.vae") if latent else None
        self.posterior_mean = pm.eval().requires_grad_(False)
        self.space = LatentSpace(vae, cfg.vae_sample_posterior) if latent else PixelSpace()
        channels = vae.latent_channels if latent else 3
        if (cfg.model.in_channels, cfg.model.out_channels) != (channels, channels):
            where = f"the latent channels of vae {cfg.vae}" if latent else "space: pixel"
            raise ValueError(f"model.in_channels/out_channels must be {channels} ({where}), got "
                             f"{cfg.model.in_channels}/{cfg.model.out_channels}")
        self.velocity = build_velocity(cfg.model)
        self.save_hyperparameters({"config": to_dict(cfg), "frozen_configs": {
            "posterior_mean": to_dict(pm.config), "vae": autoencoder_config(vae) if latent else None}})
        self._val_rows: list[torch.Tensor] | None = None

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (VAE downsampling × velocity net patch/merges)."""
        return self.space.scale_factor * self.cfg.model.multiple

    def train(self, mode: bool = True) -> FlowModule:
        super().train(mode)
        self.posterior_mean.eval()  # frozen: no dropout / drop-path
        return self

    # ------------------------------------------------------------------ training
    def full_precision(self) -> torch.autocast:
        """The frozen f(y) and VAE run in float32 even inside a bf16-mixed step: their outputs are the
        flow's source and target, which bf16 would quantise."""
        return torch.autocast(self.device.type, enabled=False)

    @torch.no_grad()
    def flow_endpoints(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z0, X1) of Fig. 2: Z0 = space(clip(f(y))) + σ_s·ε, X1 = space(x), in float32."""
        with self.full_precision():
            x0 = source_sample(self.space, self.posterior_mean(lq.float()), self.cfg.source_noise_std)
            return x0, self.space.encode(gt.float())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        log_skipped_files(self, batch)
        x0, x1 = self.flow_endpoints(batch["lq"], batch["gt"])
        t = stratified_uniform(x0.shape[0], self.global_rank, self.trainer.world_size, device=x0.device)
        loss = flow_matching_loss(self.velocity, x0, x1, t)
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def restore(self, lq: torch.Tensor, steps: int = 25,
                generator: torch.Generator | list[torch.Generator] | None = None,
                sampler: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(restored, posterior mean), both in [-1, 1]; sides must be multiples of ``size_multiple``.

        With one generator per image the result of an image does not depend on its batch.
        ``sampler``: the Euler time grid (default: the config's ``sampler``).
        """
        sigma = self.cfg.source_noise_std
        with self.full_precision():
            pm = self.posterior_mean(lq.float()).clamp(-1, 1)
            if isinstance(generator, (list, tuple)):
                x0 = torch.cat([source_sample(self.space, pm[i : i + 1], sigma, generator=g)
                                for i, g in enumerate(generator)])
            else:
                x0 = source_sample(self.space, pm, sigma, generator=generator)
        x1 = sample_euler(self.velocity, x0, steps, schedule=sampler or self.cfg.sampler)
        with self.full_precision():
            return self.space.decode(x1.float()).clamp(-1, 1), pm

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        g = torch.Generator(device=self.device).manual_seed(self.cfg.data.seed * 100_003 + batch_idx)
        restored, pm = self.restore(batch["lq"], self.cfg.val_steps, generator=g)
        log_psnr_ssim(self, restored, batch["gt"])
        if batch_idx == 0:
            k = min(4, restored.shape[0])
            self._val_rows = [batch["lq"][:k], pm[:k], restored[:k], batch["gt"][:k]]

    def on_validation_epoch_end(self) -> None:
        if self._val_rows is not None:
            save_grid(self, self._val_rows, "restoration")
            self._val_rows = None

    def configure_optimizers(self):
        o = self.cfg.optim
        return torch.optim.AdamW(self.velocity.parameters(), lr=o.lr, betas=tuple(o.betas),
                                 weight_decay=o.weight_decay, eps=o.eps)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> FlowModule:
        """A trained flow (EMA weights) with its frozen nets, from one ``.ckpt``; ``weights_only`` load."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"flow checkpoint not found: {path}")
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        hp = ckpt.get("hyper_parameters", {})
        if "config" not in hp or "frozen_configs" not in hp:
            raise ValueError(f"{path}: not a latent-pmrf flow checkpoint (no hyper_parameters.config/frozen_configs)")
        try:
            module = cls(hp["config"], frozen_configs=hp["frozen_configs"])
        except ValueError as err:
            raise ValueError(f"{path}: cannot rebuild the flow and its frozen nets: {err}") from err
        module.load_state_dict(ckpt["state_dict"], strict=True)
        return module.eval()

    @classmethod
    def from_pmrf_release(cls, path: str | Path | None = None, **configs) -> FlowModule:
        """PMRF's released blind-face model (Table 4's "PMRF" row) as a pixel-space flow: its HDiT
        behind the [0, 1] -> [-1, 1] velocity conversion, DifFace's SwinIR, σ_s = 0.2, uniform Euler
        steps (PMRF's sampler). ``configs``: ``velocity_config`` / ``posterior_mean_config`` of
        ``load_pmrf_release`` (tests use tiny ones)."""
        from ..models.pmrf_import import load_pmrf_release

        release = load_pmrf_release(path, **configs)
        cfg = FlowTrainConfig(space="pixel", model=release.velocity.net.config, sampler="uniform",
                              source_noise_std=release.source_noise_std)
        module = cls(cfg, frozen_configs={"posterior_mean": to_dict(release.posterior_mean.config), "vae": None})
        module.posterior_mean = release.posterior_mean.requires_grad_(False)
        module.velocity = release.velocity
        return module.eval()
