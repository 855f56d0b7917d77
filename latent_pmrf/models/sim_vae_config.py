"""``SimVAEConfig``: the architecture of a Sim-VAE-family autoencoder and its named presets (paper
Tables 1-3). Kept apart from the model so the file format (``vae_hub.py``) and the training configs
read it without importing the network."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .vae_blocks import RES_BLOCKS


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
