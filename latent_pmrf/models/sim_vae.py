"""Sim-VAE: the KL autoencoder of Latent-PMRF (paper Sec. 3.3 and Appendix B), and its ablations.

One model class covers the whole VAE ablation table (Table 2) through ``SimVAEConfig`` switches:

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

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .gaussian import DiagonalGaussian
from .vae_blocks import RES_BLOCKS, Downsample, MidAttention, Upsample, make_norm


@dataclass
class SimVAEConfig:
    """Architecture of a Sim-VAE-family autoencoder. Defaults are the official ``sim_vae_c32``."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 32
    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    layers_per_block: int = 2  # encoder ResBlocks per level; the decoder has one more
    layers_mid_block: int = 3
    norm_type: str = "layer_norm"  # "layer_norm" | "group_norm"
    norm_position: str = "pre_norm"  # "pre_norm" | "post_norm"
    block_type: str = "simple"  # "simple" (Sim-VAE) | "sd" (SD-VAE ResBlock)
    mid_attention: bool = False  # self-attention between mid-block ResBlocks (SD-VAE)
    resize: str = "fused"  # "fused": resizing convs change channels | "separate": ResBlocks do
    upsample_method: str = "interpolate"  # "interpolate" (nearest x2 + conv) | "pixel_shuffle"
    downsample_padding: str = "same"  # "same" (pad 1) | "asymmetric" (SD-VAE: pad right/bottom)
    out_norm: bool = False  # norm + SiLU before each conv_out (SD-VAE)
    quant_conv: bool = False  # 1x1 quant_conv / post_quant_conv around the latent (SD-VAE)
    norm_eps: float = 1e-6
    norm_groups: int = 32
    # Latent normalisation z' = (z - shift_factor) * scaling_factor, applied by
    # ``normalize_latents`` before the flow model (None = identity). Estimate them with
    # ``latent-pmrf vae-latent-stats``.
    scaling_factor: float | None = None
    shift_factor: float | None = None

    def __post_init__(self) -> None:
        choices = {
            "norm_type": ("layer_norm", "group_norm"),
            "norm_position": ("pre_norm", "post_norm"),
            "block_type": tuple(RES_BLOCKS),
            "resize": ("fused", "separate"),
            "upsample_method": ("interpolate", "pixel_shuffle"),
            "downsample_padding": ("same", "asymmetric"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"SimVAEConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.block_out_channels:
            raise ValueError("SimVAEConfig.block_out_channels must list at least one width")
        for name in ("in_channels", "out_channels", "latent_channels", "layers_per_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"SimVAEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.layers_mid_block < 0:
            raise ValueError(f"SimVAEConfig.layers_mid_block must be >= 0, got {self.layers_mid_block}")
        if self.mid_attention and self.layers_mid_block < 2:
            raise ValueError("SimVAEConfig.mid_attention needs layers_mid_block >= 2 (attention sits between ResBlocks)")
        if self.norm_type == "group_norm":
            bad = [c for c in self.block_out_channels if c % self.norm_groups]
            if bad:
                raise ValueError(f"group_norm needs every width divisible by norm_groups={self.norm_groups}; got {bad}")
        if self.block_type == "sd" and self.norm_position != "pre_norm":
            raise ValueError("block_type='sd' is pre-norm only")
        if self.scaling_factor is not None and self.scaling_factor <= 0:
            raise ValueError(f"SimVAEConfig.scaling_factor must be > 0, got {self.scaling_factor}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def preset(cls, name: str, **overrides) -> "SimVAEConfig":
        if name not in SIM_VAE_PRESETS:
            raise KeyError(f"unknown Sim-VAE preset {name!r}; choose from {sorted(SIM_VAE_PRESETS)}")
        return dataclasses.replace(SIM_VAE_PRESETS[name], **overrides)


SIM_VAE_PRESETS: dict[str, SimVAEConfig] = {
    # Paper Table 1/3 rows "Sim-VAE f8c32" and "f8c16" (official releases sienna223/Sim-VAE-c32, -c16).
    "sim_vae_c32": SimVAEConfig(latent_channels=32),
    "sim_vae_c16": SimVAEConfig(latent_channels=16),
    "sim_vae_c24": SimVAEConfig(latent_channels=24),  # Table 3
    "sim_vae_c48": SimVAEConfig(latent_channels=48),  # Table 3
    # Table 2 ablations, each removing one Sim-VAE change from sim_vae_c32.
    "sim_vae_c32_group_norm": SimVAEConfig(norm_type="group_norm"),  # "- layernorm"
    # "- 3x3 conv": the mid block goes back to SD-VAE's ResBlock-Attn-ResBlock (attention kept).
    "sim_vae_c32_mid_attention": SimVAEConfig(mid_attention=True, layers_mid_block=2),
    "sim_vae_c32_separate_resize": SimVAEConfig(resize="separate"),  # "- interpolate"
    "sim_vae_c32_post_norm": SimVAEConfig(norm_position="post_norm"),
    # Table 2 last row / Table 1 "SD-VAE f8c32": the VQGAN/SD-VAE architecture with 32 latent
    # channels (diffusers AutoencoderKL, block_out_channels 128/256/512/512, 2 layers per block).
    "sd_vae": SimVAEConfig(
        norm_type="group_norm", block_type="sd", mid_attention=True, layers_mid_block=2,
        resize="separate", downsample_padding="asymmetric", out_norm=True, quant_conv=True,
    ),
}


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
        from .vae_hub import read_config_json

        return cls(read_config_json(path))

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, map_location: str | torch.device = "cpu") -> "SimVAE":
        """Load a local hub snapshot (``config.json`` + ``diffusion_pytorch_model.safetensors``),
        given as a directory or as a repo id already in the Hugging Face cache (e.g.
        ``sienna223/Sim-VAE-c32``). Keys are matched strictly."""
        from .vae_hub import load_pretrained

        return load_pretrained(cls, path_or_repo_id, map_location)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` in the official format."""
        from .vae_hub import save_pretrained

        return save_pretrained(self, directory)
