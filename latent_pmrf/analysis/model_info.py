"""Parameters and forward FLOPs of any model preset (Table 4's "#Params" column as a command).

Presets of every model family: Sim-VAE (``SIM_VAE_PRESETS``, f8, encode + decode of a 3×R×R
image), SwinIR (``SWINIR_PRESETS``, one 3×R×R image) and the velocity nets (``VELOCITY_PRESETS``:
HDiT and the official LooUFormer, one evaluation v(x, t) on an R×R RGB image when the net has 3
input channels (pixel PMRF), else on the f8 latent of an R×R image). Models are built on the meta
device, so nothing is allocated or computed; FLOPs are counted by ``torch.utils.flop_counter``
(multiply-adds count 2). Neighbourhood attention is counted as the pure-PyTorch fallback of
``models/attention.py`` computes it (overlapping tiles), somewhat above natten's k² per query.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..models.sim_vae import SIM_VAE_PRESETS, SimVAE, SimVAEConfig
from ..models.swinir import SWINIR_PRESETS, SwinIR, SwinIRConfig
from ..models.velocity import VELOCITY_PRESETS, build_velocity, velocity_preset

LATENT_FACTOR = 8  # the Sim-VAE family's downsampling (four levels)


@dataclass
class ModelInfo:
    preset: str
    family: str
    parameters: int
    trainable_parameters: int
    gflops: float  # forward, batch 1
    input_shape: list[int]

    def as_dict(self) -> dict:
        return asdict(self)


def all_presets() -> dict[str, str]:
    """Preset name -> family (sim_vae, swinir, hdit, looformer)."""
    return {**{n: "sim_vae" for n in SIM_VAE_PRESETS}, **{n: "swinir" for n in SWINIR_PRESETS}, **VELOCITY_PRESETS}


def _build(preset: str, family: str, resolution: int) -> tuple[nn.Module, tuple, list[int]]:
    """(model, forward arguments, input shape) on the meta device."""
    if family == "sim_vae":
        model = SimVAE(SimVAEConfig.preset(preset))
        shape = [1, 3, resolution, resolution]
        return model, (torch.empty(shape),), shape
    if family == "swinir":
        model = SwinIR(SwinIRConfig.preset(preset))
        shape = [1, 3, resolution, resolution]
        return model, (torch.empty(shape),), shape
    cfg = velocity_preset(preset)
    side = resolution if cfg.in_channels == 3 else resolution // LATENT_FACTOR
    shape = [1, cfg.in_channels, side, side]
    return build_velocity(cfg), (torch.empty(shape), torch.full((1,), 0.5)), shape


def _forward(model: nn.Module, args: tuple) -> None:
    if isinstance(model, SimVAE):
        model.decode(model.encode(*args).mode())
    else:
        model(*args)


def model_info(preset: str, resolution: int = 512) -> ModelInfo:
    from torch.utils.flop_counter import FlopCounterMode

    families = all_presets()
    if preset not in families:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(sorted(families))}")
    family = families[preset]
    if resolution < 1 or resolution % 64:
        raise ValueError(f"--resolution must be a positive multiple of 64 (f8 latents, token merges), got {resolution}")
    try:
        with torch.device("meta"):
            model, args, shape = _build(preset, family, resolution)
    except NotImplementedError:  # a constructor reads tensor values (SwinIR's drop-path rates, masks)
        model, args, shape = _build(preset, family, resolution)
        model, args = model.to("meta"), tuple(a.to("meta") for a in args)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        _forward(model, args)
    params = list(model.parameters())
    return ModelInfo(preset=preset, family=family, parameters=sum(p.numel() for p in params),
                     trainable_parameters=sum(p.numel() for p in params if p.requires_grad),
                     gflops=counter.get_total_flops() / 1e9, input_shape=shape)
