"""The official Sim-VAE file format (diffusers layout), read and written unchanged.

A snapshot is a directory with

* ``config.json`` -- ``{"_class_name": "AutoencoderKLSim", "block_out_channels": [...], ...}``
  (``shared/reference/official_c32_config.json`` is the c32 release's), and
* ``diffusion_pytorch_model.safetensors`` -- the state dict, whose keys equal our module names.

Configs the official class cannot express (SD-VAE blocks, mid attention, separate resizing,
...) are written with ``"_class_name": "SimVAE"`` and the extra switches under ``"latent_pmrf"``,
so the official loader refuses them instead of building a different network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_write, write_text_atomic
from ..weights import SIM_VAE_FILES, fetch_hf_snapshot
from .sim_vae_config import SimVAEConfig

CONFIG_NAME, WEIGHTS_NAME = SIM_VAE_FILES
OFFICIAL_CLASS = "AutoencoderKLSim"
OUR_CLASS = "SimVAE"

# Official config.json keys that carry no architecture (kept for the official loader's sake).
_PASSIVE_KEYS = {"force_upcast", "sample_size", "apply_norm_in_self_attn"}
# Fields of SimVAEConfig that the official format has no key for.
_EXTRA_FIELDS = ("block_type", "mid_attention", "resize", "downsample_padding", "out_norm", "quant_conv",
                 "norm_eps", "norm_groups")


def config_from_dict(raw: dict, source: str = "config.json") -> SimVAEConfig:
    """Map an official (or our) ``config.json`` dict to ``SimVAEConfig``; unknown keys are errors."""
    cls_name = raw.get("_class_name", OFFICIAL_CLASS)
    if cls_name not in (OFFICIAL_CLASS, OUR_CLASS):
        raise ValueError(f"{source}: _class_name is {cls_name!r}; expected {OFFICIAL_CLASS!r} or {OUR_CLASS!r}")
    known = {
        "in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
        "layers_mid_block", "norm_type", "norm_pos", "upsample_method", "scaling_factor", "shift_factor",
        "down_block_types", "up_block_types", "mid_block_type", "mid_block_out_channel", "latent_pmrf",
    } | _PASSIVE_KEYS
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"{source}: unknown Sim-VAE config keys {unknown}")

    widths = list(raw.get("block_out_channels", SimVAEConfig().block_out_channels))
    expectations = {
        "down_block_types": ["EncoderBlock2D"] * len(widths),
        "up_block_types": ["DecoderBlock2D"] * len(widths),
        "mid_block_type": "Block2D",
        "mid_block_out_channel": widths[-1],
    }
    for key, expected in expectations.items():
        if key in raw and (list(raw[key]) if isinstance(expected, list) else raw[key]) != expected:
            raise ValueError(f"{source}: {key} is {raw[key]!r}; this implementation supports only {expected!r}")

    fields = dict(
        in_channels=raw.get("in_channels", 3),
        out_channels=raw.get("out_channels", 3),
        latent_channels=raw.get("latent_channels", 32),
        block_out_channels=widths,
        layers_per_block=raw.get("layers_per_block", 2),
        layers_mid_block=raw.get("layers_mid_block", 3),
        norm_type=raw.get("norm_type", "layer_norm"),
        norm_position=raw.get("norm_pos", "pre_norm"),
        upsample_method=raw.get("upsample_method", "interpolate"),
        scaling_factor=raw.get("scaling_factor"),
        shift_factor=raw.get("shift_factor"),
    )
    extras = raw.get("latent_pmrf", {})
    bad_extras = sorted(set(extras) - set(_EXTRA_FIELDS))
    if bad_extras:
        raise ValueError(f"{source}: unknown keys under 'latent_pmrf': {bad_extras}")
    try:
        return SimVAEConfig(**fields, **extras)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from err


def config_to_dict(cfg: SimVAEConfig) -> dict:
    """``SimVAEConfig`` -> the official ``config.json`` dict (plus ``latent_pmrf`` extras if needed)."""
    n = len(cfg.block_out_channels)
    out = {
        "_class_name": OFFICIAL_CLASS,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "latent_channels": cfg.latent_channels,
        "block_out_channels": list(cfg.block_out_channels),
        "down_block_types": ["EncoderBlock2D"] * n,
        "up_block_types": ["DecoderBlock2D"] * n,
        "mid_block_type": "Block2D",
        "mid_block_out_channel": cfg.block_out_channels[-1],
        "layers_per_block": cfg.layers_per_block,
        "layers_mid_block": cfg.layers_mid_block,
        "norm_type": cfg.norm_type,
        "norm_pos": cfg.norm_position,
        "upsample_method": cfg.upsample_method,
        "scaling_factor": cfg.scaling_factor,
        "shift_factor": cfg.shift_factor,
        "force_upcast": True,
        "sample_size": 32,
        "apply_norm_in_self_attn": False,
    }
    default = SimVAEConfig()
    extras = {k: getattr(cfg, k) for k in _EXTRA_FIELDS if getattr(cfg, k) != getattr(default, k)}
    if extras:
        out["_class_name"] = OUR_CLASS
        out["latent_pmrf"] = extras
    return out


def read_config_json(path: str | Path) -> SimVAEConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Sim-VAE config not found: {path} (expected an official {CONFIG_NAME})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    return config_from_dict(raw, source=str(path))


def resolve_snapshot(path_or_repo_id: str | Path) -> Path:
    """A local directory, or a repo id looked up in the Hugging Face cache (downloaded if online)."""
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path
    repo_id = str(path_or_repo_id)
    if repo_id.count("/") != 1 or path.exists():
        raise FileNotFoundError(f"Sim-VAE snapshot not found: {path} is not a directory with {CONFIG_NAME} and {WEIGHTS_NAME}")
    return fetch_hf_snapshot(repo_id, SIM_VAE_FILES, f"The VAE {repo_id}")


def read_pretrained(path_or_repo_id: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[SimVAEConfig, dict[str, torch.Tensor], Path]:
    """A snapshot's config, state dict and weights file (the name for error messages)."""
    snapshot = resolve_snapshot(path_or_repo_id)
    weights = snapshot / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"Sim-VAE weights not found: {weights} (expected next to {snapshot / CONFIG_NAME})")
    return read_config_json(snapshot / CONFIG_NAME), load_file(str(weights), device=str(map_location)), weights


def write_pretrained(directory: str | Path, config: SimVAEConfig, state: Mapping[str, torch.Tensor]) -> Path:
    """``config.json`` + ``diffusion_pytorch_model.safetensors`` in ``directory``, each written atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    write_text_atomic(directory / CONFIG_NAME, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")
    return directory
