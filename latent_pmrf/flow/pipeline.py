"""The restoration pipeline: posterior-mean estimator f, the flow's space (a VAE, or pixels) and the
velocity net v_θ, as one pure ``nn.Module`` that training, ``restore`` and ``evaluate`` share.

Restoration (paper Fig. 2, Sec. 3.1): Z0 = space(clip(f(y), -1, 1)) + σ_s·ε, K Euler steps of
dx/dt = v_θ(x, t) from t = 0 to 1, then x̂ = space⁻¹(X1). The frozen f and VAE run in float32 even
inside a bf16 autocast region (their outputs are the flow's source and target).

Files: ``save_pretrained(DIR)`` writes ``config.json`` (the architecture) and
``model.safetensors`` (all weights); ``from_pretrained(DIR)`` reads them back;
``from_checkpoint(PATH)`` reads a flow training checkpoint (``weights_only``, no Lightning needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write, write_text_atomic
from ..config import to_dict
from ..models.autoencoder import autoencoder_config, autoencoder_from_config
from ..models.pmrf_import import UnitRangeVelocity, load_pmrf_release
from ..models.state_dict import load_strict
from ..models.swinir import SwinIR, SwinIRConfig
from ..models.velocity import VELOCITY_FAMILIES, build_velocity
from .sampler import SCHEDULES, sample_euler
from .spaces import LatentSpace, PixelSpace, source_sample

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "latent-pmrf-pipeline"
FORMAT_VERSION = 1
CHECKPOINT_PREFIX = "pipeline."  # the pipeline's keys inside a FlowModule checkpoint's state_dict


class RestorationPipeline(nn.Module):
    def __init__(self, posterior_mean: nn.Module, velocity: nn.Module, vae: nn.Module | None = None,
                 source_noise_std: float = 0.1, sampler: str = "uniform", vae_sample_posterior: bool = True):
        super().__init__()
        if sampler not in SCHEDULES:
            raise ValueError(f"sampler must be one of {SCHEDULES}, got {sampler!r}")
        self.posterior_mean = posterior_mean.eval().requires_grad_(False)
        self.space = LatentSpace(vae, vae_sample_posterior) if vae is not None else PixelSpace()
        self.velocity = velocity
        self.source_noise_std = source_noise_std
        self.sampler = sampler
        channels = vae.latent_channels if vae is not None else 3
        cfg = velocity.config
        if (cfg.in_channels, cfg.out_channels) != (channels, channels):
            where = "the VAE's latent channels" if vae is not None else "RGB, pixel space"
            raise ValueError(f"velocity net in/out channels are {cfg.in_channels}/{cfg.out_channels}, "
                             f"expected {channels} ({where})")

    @property
    def vae(self) -> nn.Module | None:
        return getattr(self.space, "vae", None)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (VAE downsampling × velocity net patch/merges)."""
        return self.space.scale_factor * self.velocity.config.multiple

    def train(self, mode: bool = True) -> RestorationPipeline:
        super().train(mode)
        self.posterior_mean.eval()  # frozen: no dropout / drop-path
        return self

    def full_precision(self) -> torch.autocast:
        """The frozen f(y) and VAE run in float32 even inside a bf16 autocast region."""
        return torch.autocast(self.source_device.type, enabled=False)

    @property
    def source_device(self) -> torch.device:
        return next(self.posterior_mean.parameters()).device

    @torch.no_grad()
    def source(self, lq: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z0, f(y)): Z0 = space(clip(f(y), -1, 1)) + σ_s·ε; with one generator per image, an
        image's draw does not depend on its batch."""
        with self.full_precision():
            posterior_mean = self.posterior_mean(lq.float()).clamp(-1, 1)
            sigma = self.source_noise_std
            if isinstance(generator, (list, tuple)):
                x0 = torch.cat([source_sample(self.space, posterior_mean[i : i + 1], sigma, generator=g)
                                for i, g in enumerate(generator)])
            else:
                x0 = source_sample(self.space, posterior_mean, sigma, generator=generator)
        return x0, posterior_mean

    @torch.no_grad()
    def flow_endpoints(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z0, X1) of a training pair (Fig. 2), in float32."""
        x0, _ = self.source(lq)
        with self.full_precision():
            return x0, self.space.encode(gt.float())

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, steps: int = 25,
                generator: torch.Generator | list[torch.Generator] | None = None,
                sampler: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(restored, posterior mean), both in [-1, 1]; sides must be multiples of ``size_multiple``.
        ``sampler``: the Euler time grid (default: the pipeline's)."""
        x0, posterior_mean = self.source(lq, generator)
        x1 = sample_euler(self.velocity, x0, steps, schedule=sampler or self.sampler)
        with self.full_precision():
            return self.space.decode(x1.float()).clamp(-1, 1), posterior_mean

    # ------------------------------------------------------------------ files
    def config_dict(self) -> dict:
        """The architecture (no weights): what ``from_config_dict`` rebuilds."""
        velocity = self.velocity.net if isinstance(self.velocity, UnitRangeVelocity) else self.velocity
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "source_noise_std": self.source_noise_std,
                "sampler": self.sampler, "vae_sample_posterior": getattr(self.space, "sample_posterior", True),
                "posterior_mean": to_dict(self.posterior_mean.config),
                "velocity": to_dict(velocity.config),
                "velocity_unit_range": isinstance(self.velocity, UnitRangeVelocity),
                "vae": autoencoder_config(self.vae) if self.vae is not None else None}

    @classmethod
    def from_config_dict(cls, raw: dict, source: str = "pipeline config") -> RestorationPipeline:
        """An untrained pipeline of the architecture ``config_dict`` wrote; the caller loads weights."""
        if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: not a {FORMAT} config of version {FORMAT_VERSION} "
                             f"(found format {raw.get('format')!r}, version {raw.get('format_version')!r})")
        try:
            family = raw["velocity"].get("family", "hdit")
            if family not in VELOCITY_FAMILIES:
                raise ValueError(f"unknown velocity-model family {family!r}")
            velocity = build_velocity(VELOCITY_FAMILIES[family].config(**raw["velocity"]))
            if raw.get("velocity_unit_range"):
                velocity = UnitRangeVelocity(velocity)
            vae = autoencoder_from_config(raw["vae"], f"{source}: vae") if raw.get("vae") else None
            return cls(SwinIR(SwinIRConfig(**raw["posterior_mean"])), velocity, vae,
                       source_noise_std=float(raw["source_noise_std"]), sampler=raw["sampler"],
                       vae_sample_posterior=bool(raw["vae_sample_posterior"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: cannot rebuild the pipeline: {err}") from err

    def save_pretrained(self, folder: str | Path) -> Path:
        """``folder/config.json`` + ``folder/model.safetensors`` (atomic writes)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp)))
        write_text_atomic(folder / CONFIG_NAME, json.dumps(self.config_dict(), indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> RestorationPipeline:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: a pipeline folder holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                                        "(written by RestorationPipeline.save_pretrained)")
        try:
            raw = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path}: not valid JSON: {err}") from err
        pipeline = cls.from_config_dict(raw, str(config_path))
        try:
            state = load_file(str(weights_path), device=str(map_location))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{weights_path}: not a readable safetensors file: {err}") from err
        load_strict(pipeline, state, str(weights_path))
        return pipeline.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> RestorationPipeline:
        """A flow training checkpoint's pipeline (EMA velocity weights, frozen nets included), read
        with ``torch.load(weights_only=True)``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"flow checkpoint not found: {path}")
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # pickle / zip errors of every kind: the file is not a checkpoint
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err
        hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
        if "pipeline" not in hp:
            hint = (" (written by an older latent-pmrf whose flow checkpoints stored frozen_configs; retrain, "
                    "or restore with that version)" if "frozen_configs" in hp else
                    f"; its hyper_parameters hold {sorted(hp)[:5]}: is it a "
                    f"{hp.get('config', {}).get('task', 'non-flow')} checkpoint?")
            raise ValueError(f"{path}: not a latent-pmrf flow checkpoint (no hyper_parameters.pipeline){hint}")
        pipeline = cls.from_config_dict(hp["pipeline"], f"{path}: hyper_parameters.pipeline")
        state = {k[len(CHECKPOINT_PREFIX):]: v for k, v in ckpt.get("state_dict", {}).items()
                 if k.startswith(CHECKPOINT_PREFIX)}
        load_strict(pipeline, state, str(path))
        return pipeline.eval()

    @classmethod
    def from_pmrf_release(cls, path: str | Path | None = None, **configs) -> RestorationPipeline:
        """PMRF's released blind-face model (Table 4's "PMRF" row) in pixel space: its HDiT behind
        the [0, 1] -> [-1, 1] velocity conversion, DifFace's SwinIR, σ_s = 0.2, uniform Euler steps
        (PMRF's sampler). ``configs``: ``velocity_config`` / ``posterior_mean_config`` of
        ``load_pmrf_release`` (tests use tiny ones)."""
        release = load_pmrf_release(path, **configs)
        return cls(release.posterior_mean, release.velocity, None,
                   source_noise_std=release.source_noise_std, sampler="uniform").eval()


def load_restoration(path: str | Path) -> RestorationPipeline:
    """What ``restore`` takes: a flow training checkpoint (``.ckpt``), a pipeline folder
    (``save_pretrained``), or PMRF's released model (its folder or ``model.safetensors``)."""
    path = Path(path)
    if path.suffix == ".ckpt" or path.is_file() and path.suffix != ".safetensors":
        return RestorationPipeline.from_checkpoint(path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        raw = json.loads((path / CONFIG_NAME).read_text())
        if raw.get("format") == FORMAT:
            return RestorationPipeline.from_pretrained(path)
    return RestorationPipeline.from_pmrf_release(path)
