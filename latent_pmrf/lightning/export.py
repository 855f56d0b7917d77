"""Export a VAE training checkpoint as an official-format Sim-VAE snapshot."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import from_dict
from ..models.sim_vae import SimVAE, SimVAEConfig
from ..models.state_dict import load_strict


def export_vae(ckpt_path: str | Path, out_dir: str | Path) -> tuple[Path, bool]:
    """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` to ``out_dir``.

    Returns the directory and whether EMA weights were exported. With the EMA callback the
    checkpoint's ``state_dict`` holds the EMA weights (the live ones are in
    ``current_model_state``). Loaded with ``weights_only=True``: no code from the file runs.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    try:
        model_cfg = from_dict(SimVAEConfig, ckpt["hyper_parameters"]["config"]["model"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{ckpt_path}: no hyper_parameters.config.model: not a latent-pmrf VAE checkpoint") from err
    state = {k.removeprefix("vae."): v for k, v in ckpt["state_dict"].items() if k.startswith("vae.")}
    vae = SimVAE(model_cfg)
    load_strict(vae, state, str(ckpt_path))
    return vae.save_pretrained(out_dir), "current_model_state" in ckpt
