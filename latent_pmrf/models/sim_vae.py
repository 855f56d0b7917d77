"""Sim-VAE: the KL autoencoder of Latent-PMRF (paper Sec. 3.3 and Appendix B), and its ablations.

One model class covers the whole VAE ablation table (Table 2) through ``SimVAEConfig`` switches (``sim_vae_config.py``):

=====================  ===============================  =============================
field                  Sim-VAE (``sim_vae_c32``)         SD-VAE (``sd_vae``)
=====================  ===============================  =============================
``norm_type``          ``layer_norm`` (pixel-wise LN)   ``group_norm`` (32 groups)
``norm_position``      ``pre_norm``                     ``pre_norm``
``block_type``         ``simple`` (Fig. 6 right)        ``sd`` (Fig. 6 left)
``mid_attention``      False (3x3 convs only)           True
``resize``             ``fused`` (Fig. 7b)              ``separate`` (Fig. 7a)
``out_norm``           False                            True (norm + SiLU before conv_out)
``quant_conv``         False                            True (1x1 convs around the latent)
=====================  ===============================  =============================

Images are (B, 3, H, W) in [-1, 1] with H and W multiples of the downsampling factor (8 for four
levels). ``SimVAE.from_pretrained`` loads the official diffusers-format release unchanged; see
``vae_hub.py`` for the file format.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .gaussian import DiagonalGaussian
from .sim_vae_config import SIM_VAE_PRESETS, SimVAEConfig  # noqa: F401  (re-exported with the model)
from .state_dict import load_strict
from .vae_blocks import RES_BLOCKS, Downsample, MidAttention, Upsample, make_norm
from .vae_hub import CONFIG_NAME, read_config_json, read_pretrained, write_pretrained


def _res_block(cfg: SimVAEConfig, in_channels: int, out_channels: int) -> nn.Module:
    block = RES_BLOCKS[cfg.block_type]
    return block(in_channels, out_channels, cfg.norm_type, cfg.norm_position, cfg.norm_eps, cfg.norm_groups)


class EncoderLevel(nn.Module):
    """ResBlocks at one resolution, then (except at the last level) a stride-2 Downsample."""

    def __init__(self, cfg: SimVAEConfig, in_channels: int, width: int, next_width: int | None):
        super().__init__()
        fused = cfg.resize == "fused"
        # Fused: the level works at `width` throughout and the downsampler moves to next_width.
        # Separate: the first ResBlock moves in_channels -> width and the downsampler keeps it.
        first_in = width if fused else in_channels
        self.resnets = nn.ModuleList(
            [_res_block(cfg, first_in if i == 0 else width, width) for i in range(cfg.layers_per_block)]
        )
        self.downsampler = None
        if next_width is not None:
            self.downsampler = Downsample(width, next_width if fused else width, cfg.downsample_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.downsampler is None else self.downsampler(x)


class DecoderLevel(nn.Module):
    """``layers_per_block + 1`` ResBlocks at one resolution, then (except last) an x2 Upsample."""

    def __init__(self, cfg: SimVAEConfig, in_channels: int, width: int, next_width: int | None):
        super().__init__()
        fused = cfg.resize == "fused"
        first_in = width if fused else in_channels
        self.resnets = nn.ModuleList(
            [_res_block(cfg, first_in if i == 0 else width, width) for i in range(cfg.layers_per_block + 1)]
        )
        self.upsampler = None
        if next_width is not None:
            self.upsampler = Upsample(width, next_width if fused else width, cfg.upsample_method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsampler is None else self.upsampler(x)


class MidBlock(nn.Module):
    """``layers_mid_block`` ResBlocks at the lowest resolution; with ``mid_attention`` a
    self-attention layer sits between consecutive ResBlocks (SD-VAE: ResBlock, attn, ResBlock)."""

    def __init__(self, cfg: SimVAEConfig, channels: int):
        super().__init__()
        self.resnets = nn.ModuleList([_res_block(cfg, channels, channels) for _ in range(cfg.layers_mid_block)])
        n_attn = cfg.layers_mid_block - 1 if cfg.mid_attention else 0
        self.attentions = nn.ModuleList(
            [MidAttention(channels, cfg.norm_type, cfg.norm_eps, cfg.norm_groups) for _ in range(n_attn)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            if i > 0 and self.attentions:
                x = self.attentions[i - 1](x)
            x = resnet(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: SimVAEConfig):
        super().__init__()
        widths = cfg.block_out_channels
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            EncoderLevel(cfg, widths[max(i - 1, 0)], widths[i], widths[i + 1] if i + 1 < len(widths) else None)
            for i in range(len(widths))
        )
        self.mid_block = MidBlock(cfg, widths[-1])
        self.conv_norm_out = make_norm(cfg.norm_type, widths[-1], cfg.norm_eps, cfg.norm_groups) if cfg.out_norm else None
        # 2C channels: mean and log-variance of q(z|x).
        self.conv_out = nn.Conv2d(widths[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down_blocks:
            x = level(x)
        x = self.mid_block(x)
        if self.conv_norm_out is not None:
            x = F.silu(self.conv_norm_out(x))
        return self.conv_out(x)


class Decoder(nn.Module):
    def __init__(self, cfg: SimVAEConfig):
        super().__init__()
        widths = list(reversed(cfg.block_out_channels))
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(cfg, widths[0])
        self.up_blocks = nn.ModuleList(
            DecoderLevel(cfg, widths[max(i - 1, 0)], widths[i], widths[i + 1] if i + 1 < len(widths) else None)
            for i in range(len(widths))
        )
        self.conv_norm_out = make_norm(cfg.norm_type, widths[-1], cfg.norm_eps, cfg.norm_groups) if cfg.out_norm else None
        self.conv_out = nn.Conv2d(widths[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            x = level(x)
        if self.conv_norm_out is not None:
            x = F.silu(self.conv_norm_out(x))
        return self.conv_out(x)


class SimVAE(nn.Module):
    """KL autoencoder: ``encode(x) -> DiagonalGaussian``, ``decode(z) -> image``."""

    compiled_submodules = ("encoder", "decoder")  # models/compile.py: what torch.compile compiles

    def __init__(self, config: SimVAEConfig | None = None):
        super().__init__()
        self.config = config or SimVAEConfig()
        cfg = self.config
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1) if cfg.quant_conv else None
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1) if cfg.quant_conv else None

    # ---------------------------------------------------------------- Autoencoder interface (autoencoder.py)
    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def scaling_factor(self) -> float | None:
        return self.config.scaling_factor

    @property
    def shift_factor(self) -> float | None:
        return self.config.shift_factor

    # ---------------------------------------------------------------- encode / decode
    def _check_image(self, x: torch.Tensor) -> None:
        f, c = self.config.downsample_factor, self.config.in_channels
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"SimVAE.encode expects images of shape (B, {c}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % f or w % f:
            raise ValueError(
                f"SimVAE.encode needs H and W divisible by {f} (the downsampling factor); got H={h}, W={w}. "
                f"Pad or crop the image to a multiple of {f}."
            )

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x: (B, 3, H, W) in [-1, 1] -> q(z|x) with mean/logvar of shape (B, C, H/f, W/f)."""
        self._check_image(x)
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, C, h, w) raw (un-normalised) latent -> (B, 3, h*f, w*f) image in about [-1, 1]."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"SimVAE.decode expects latents of shape (B, {self.config.latent_channels}, h, w), got {tuple(z.shape)}"
            )
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruction and posterior; samples z ~ q(z|x) (training) or takes its mean."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    # ---------------------------------------------------------------- latent normalisation
    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latent -> the normalised latent a flow model works in: (z - shift) * scale."""
        shift, scale = self.config.shift_factor or 0.0, self.config.scaling_factor or 1.0
        return (z - shift) * scale

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        shift, scale = self.config.shift_factor or 0.0, self.config.scaling_factor or 1.0
        return z / scale + shift

    # ---------------------------------------------------------------- official file format
    @classmethod
    def from_config_file(cls, path: str | Path) -> "SimVAE":
        """An untrained model from an official diffusers ``config.json`` (``AutoencoderKLSim``)."""
        return cls(read_config_json(path))

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, map_location: str | torch.device = "cpu") -> "SimVAE":
        """Load a local hub snapshot (``config.json`` + ``diffusion_pytorch_model.safetensors``),
        given as a directory or as a Hugging Face repo id (e.g. ``sienna223/Sim-VAE-c32``). Keys and
        shapes are matched strictly."""
        config, state, weights = read_pretrained(path_or_repo_id, map_location)
        return load_strict(cls(config), state, str(weights),
                           note=f"The model was built from {weights.parent / CONFIG_NAME}.")

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` in the official format."""
        return write_pretrained(directory, self.config, self.state_dict())
