"""Baseline VAEs of paper Table 1 (SD1.5, SDXL, FLUX, SD3), loaded through diffusers.

``DiffusersVAE`` satisfies the ``Autoencoder`` protocol (``autoencoder.py``) as ``SimVAE`` does:
``encode(x) -> DiagonalGaussian``, ``decode(z)``, ``normalize_latents`` / ``denormalize_latents`` with
the release's ``scaling_factor`` and ``shift_factor``. diffusers is the ``baselines`` extra:
``pip install -e .[baselines]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..weights import BASELINE_VAE_RELEASES, WEIGHT_FILES, fetch_hf_snapshot
from .gaussian import DiagonalGaussian

DIFFUSERS_CLASS = "AutoencoderKL"  # config.json `_class_name` of a diffusers KL autoencoder

# name -> (Hugging Face repo id, subfolder) of the releases the paper compares against (declared,
# with their weight files, in weights.py: `latent-pmrf weights check` lists them as vae_<name>).
BASELINE_VAES = {name: (release.repo_id, release.subfolder) for name, release in BASELINE_VAE_RELEASES.items()}


def _diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ImportError("baseline VAEs need diffusers: pip install -e '.[baselines]'") from err
    return diffusers


class DiffusersVAE(nn.Module):
    """A diffusers ``AutoencoderKL`` behind the ``SimVAE`` interface (images in [-1, 1])."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        self.latent_channels = cfg.latent_channels
        self.downsample_factor = 2 ** (len(cfg.block_out_channels) - 1)
        self.scaling_factor = cfg.scaling_factor
        self.shift_factor = getattr(cfg, "shift_factor", None)

    def config_dict(self) -> dict:
        """The architecture as a plain JSON-able dict (``_class_name`` AutoencoderKL): what a flow
        checkpoint stores to rebuild this VAE without the Hugging Face cache."""
        raw = {k: v for k, v in self.model.config.items() if not k.startswith("_")}
        return {"_class_name": DIFFUSERS_CLASS, **json.loads(json.dumps(raw))}  # tuples -> lists

    @classmethod
    def from_config_dict(cls, raw: dict, source: str = "config") -> DiffusersVAE:
        """An untrained ``AutoencoderKL`` of the architecture ``config_dict`` wrote (weights come later)."""
        if raw.get("_class_name") != DIFFUSERS_CLASS:
            raise ValueError(f"{source}: _class_name is {raw.get('_class_name')!r}; expected {DIFFUSERS_CLASS!r}")
        model = _diffusers().AutoencoderKL.from_config({k: v for k, v in raw.items() if not k.startswith("_")})
        return cls(model.eval())

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        dist = self.model.encode(x).latent_dist
        return DiagonalGaussian(mean=dist.mean, logvar=dist.logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z).sample

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return (z - (self.shift_factor or 0.0)) * (self.scaling_factor or 1.0)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z / (self.scaling_factor or 1.0) + (self.shift_factor or 0.0)


def load_baseline_vae(name_or_path: str | Path, subfolder: str | None = None) -> DiffusersVAE:
    """A baseline by short name (``sd15``, ``sdxl``, ``flux``, ``sd3``: from the HF cache, or
    downloaded when online) or from a local diffusers directory."""
    diffusers = _diffusers()
    source, sub = str(name_or_path), subfolder
    if source in BASELINE_VAES:
        repo_id, sub = BASELINE_VAES[source]
        files = WEIGHT_FILES[f"vae_{source}"].hf_files
        source = str(fetch_hf_snapshot(repo_id, files, f"The baseline VAE {name_or_path!r}"))
    try:
        model = diffusers.AutoencoderKL.from_pretrained(source, subfolder=sub)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"baseline VAE {name_or_path!r}: cannot load {source!r} (subfolder {sub!r}) -- expected config.json and "
            f"diffusion_pytorch_model.safetensors there ({err})"
        ) from err
    return DiffusersVAE(model.eval())


def sd_vae_state_dict_from_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``AutoencoderKL`` state dict to our ``sd_vae`` preset's module names."""
    renames = ((".downsamplers.0.", ".downsampler."), (".upsamplers.0.", ".upsampler."),
               (".attentions.0.group_norm.", ".attentions.0.norm."))
    out = {}
    for key, value in state.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out
