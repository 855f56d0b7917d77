"""The velocity-model families v_θ(x, t) a flow can train, chosen by config (``model.family``).

- ``hdit``: k-diffusion's HDiT (``hdit.py``): presets ``hdit_pmrf`` (PMRF's pixel model) and
  ``hdit_latent_pmrf`` (the paper's Sec. 4.1 description with k-diffusion semantics);
- ``looformer``: the official release's ``LooUFormer`` (``looformer.py``): preset
  ``latent_pmrf_official`` (Table 4's 151.2 M).

Both take x (B, C, H, W) and t (B,) with t = 0 the source and t = 1 clean, return the velocity
clean - source, and have ``config.multiple`` (input sides must be multiples of it).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .hdit import HDIT_PRESETS, HDiT, HDiTConfig
from .looformer import LOOUFORMER_PRESETS, LooUFormer, LooUFormerConfig


@dataclass(frozen=True)
class VelocityFamily:
    config: type
    model: type
    presets: dict


VELOCITY_FAMILIES: dict[str, VelocityFamily] = {
    "hdit": VelocityFamily(HDiTConfig, HDiT, HDIT_PRESETS),
    "looformer": VelocityFamily(LooUFormerConfig, LooUFormer, LOOUFORMER_PRESETS),
}
VELOCITY_PRESETS = {name: family for family, f in VELOCITY_FAMILIES.items() for name in f.presets}


def velocity_preset(name: str, **overrides) -> HDiTConfig | LooUFormerConfig:
    """The config of a preset of any family (``model.preset`` in a flow config)."""
    if name not in VELOCITY_PRESETS:
        raise KeyError(f"unknown velocity-model preset {name!r}; available: {sorted(VELOCITY_PRESETS)}")
    return VELOCITY_FAMILIES[VELOCITY_PRESETS[name]].config.preset(name, **overrides)


def velocity_config_class(family: str) -> type:
    if family not in VELOCITY_FAMILIES:
        raise ValueError(f"unknown velocity-model family {family!r}; choose from {sorted(VELOCITY_FAMILIES)}")
    return VELOCITY_FAMILIES[family].config


def build_velocity(config: HDiTConfig | LooUFormerConfig) -> nn.Module:
    return VELOCITY_FAMILIES[config.family].model(config)
