"""Export a VAE or re-VAE training checkpoint as an official-format Sim-VAE snapshot."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import from_dict
from ..models.lora import merge_lora, prepare_finetuning
from ..models.sim_vae import SimVAE, SimVAEConfig
from ..models.state_dict import load_strict
from .re_vae_config import ReVAETrainConfig


def _network(hyper_parameters: dict, ckpt_path: Path) -> SimVAE:
    """The untrained network a checkpoint's ``vae.*`` weights load into: a ``vae`` run's
    ``config.model``; a ``re_vae`` run's ``model`` (the starting snapshot's architecture) with the
    same LoRA adapters it trained (so the adapter keys load strictly before they are merged)."""
    try:
        config = hyper_parameters["config"]
        if config.get("task") != "re_vae":
            return SimVAE(from_dict(SimVAEConfig, config["model"]))
        vae = SimVAE(from_dict(SimVAEConfig, hyper_parameters["model"]))
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{ckpt_path}: no hyper_parameters.config.model (vae) or hyper_parameters.model (re_vae): "
                         "not a latent-pmrf VAE checkpoint") from err
    run = from_dict(ReVAETrainConfig, config)
    prepare_finetuning(vae, run.modules, run.lora_or_none)
    return vae


def export_vae(ckpt_path: str | Path, out_dir: str | Path) -> tuple[Path, bool]:
    """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` to ``out_dir``.

    Returns the directory and whether EMA weights were exported. With the EMA callback the
    checkpoint's ``state_dict`` holds the EMA weights (the live ones are in
    ``current_model_state``). A re-VAE's LoRA adapters are merged into the weights first, so the
    snapshot has exactly the official keys. Loaded with ``weights_only=True``: no code from the file runs.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    vae = _network(ckpt.get("hyper_parameters") or {}, ckpt_path)
    state = {k.removeprefix("vae."): v for k, v in ckpt["state_dict"].items() if k.startswith("vae.")}
    load_strict(vae, state, str(ckpt_path))
    return merge_lora(vae).save_pretrained(out_dir), "current_model_state" in ckpt
