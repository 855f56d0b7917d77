"""One autoencoder interface for every VAE a flow can live in (paper Tables 1-3, Fig. 9).

``SimVAE`` (Sim-VAE and SD-VAE f8c32 snapshots) and ``DiffusersVAE`` (the SD1.5 / SDXL / FLUX / SD3
releases through diffusers) both satisfy ``Autoencoder``. ``load_autoencoder`` turns a config's
``vae:`` string into one of them; ``autoencoder_config`` / ``autoencoder_from_config`` are the plain
dict a flow checkpoint stores to rebuild its frozen VAE without any file or cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from .baseline_vaes import BASELINE_VAES, DIFFUSERS_CLASS, DiffusersVAE, load_baseline_vae
from .gaussian import DiagonalGaussian
from .sim_vae import SimVAE
from .vae_hub import (CONFIG_NAME, OFFICIAL_CLASS, OUR_CLASS, WEIGHTS_NAME, config_from_dict, config_to_dict,
                      resolve_snapshot)

EXPECTED = (f"a Sim-VAE snapshot directory ({CONFIG_NAME} with _class_name {OFFICIAL_CLASS!r} or {OUR_CLASS!r}, "
            f"and {WEIGHTS_NAME}), a diffusers directory ({CONFIG_NAME} with _class_name {DIFFUSERS_CLASS!r}), "
            f"a Hugging Face repo id of either, or one of {', '.join(BASELINE_VAES)}")


@runtime_checkable
class Autoencoder(Protocol):
    """A KL autoencoder on (B, 3, H, W) images in [-1, 1], H and W multiples of ``downsample_factor``.

    The flow sees z' = (z - shift_factor) · scaling_factor (None = 0 / 1), Sec. 3.1.
    """

    @property
    def latent_channels(self) -> int: ...

    @property
    def downsample_factor(self) -> int: ...

    @property
    def scaling_factor(self) -> float | None: ...

    @property
    def shift_factor(self) -> float | None: ...

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """(B, 3, H, W) -> q(z|x) over (B, latent_channels, H/f, W/f)."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_channels, h, w) raw latent -> (B, 3, h·f, w·f) image."""
        ...

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor: ...

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor: ...


def load_autoencoder(spec: str | Path) -> Autoencoder:
    """A VAE (on the CPU, eval mode) from a short name (``sd15``, ``sdxl``, ``flux``, ``sd3``: HF
    cache), a local directory (dispatched on its ``config.json`` ``_class_name``), or a Hugging
    Face repo id of a Sim-VAE or diffusers VAE (HF cache, downloaded when online)."""
    name = str(spec)
    if name in BASELINE_VAES:
        return load_baseline_vae(name)
    path = Path(spec)
    if path.is_dir():
        return _load_directory(path)
    if path.exists():
        hint = (" (a training checkpoint? `latent-pmrf export-vae CKPT DIR` writes a VAE checkpoint's weights as a "
                "snapshot folder)" if path.suffix == ".ckpt" else "")
        raise FileNotFoundError(f"VAE {path} is a file{hint}; expected {EXPECTED}")
    if name.count("/") != 1:
        raise FileNotFoundError(f"VAE {name!r} not found: no such directory; expected {EXPECTED}")
    try:
        snapshot = resolve_snapshot(name)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"VAE {name!r}: no such directory, and as a Hugging Face repo id: {err}") from err
    return _load_directory(snapshot)


def _load_directory(path: Path) -> Autoencoder:
    config = path / CONFIG_NAME
    if not config.is_file():
        hint = f" (a pipeline folder? try {path / 'vae'})" if (path / "vae" / CONFIG_NAME).is_file() else ""
        raise FileNotFoundError(f"VAE directory {path} has no {CONFIG_NAME}{hint}; expected {EXPECTED}")
    try:
        raw = json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config}: not valid JSON ({err})") from err
    class_name = raw.get("_class_name") if isinstance(raw, dict) else None
    if class_name in (OFFICIAL_CLASS, OUR_CLASS):
        return SimVAE.from_pretrained(path).eval()
    if class_name == DIFFUSERS_CLASS:
        return load_baseline_vae(path)
    raise ValueError(f"{config}: _class_name is {class_name!r}; expected {EXPECTED}")


def autoencoder_config(vae: Autoencoder) -> dict:
    """The architecture of ``vae`` as a plain dict (safe for ``weights_only`` checkpoints)."""
    if isinstance(vae, SimVAE):
        return config_to_dict(vae.config)
    if isinstance(vae, DiffusersVAE):
        return vae.config_dict()
    raise TypeError(f"cannot describe a {type(vae).__name__}; expected SimVAE or DiffusersVAE")


def autoencoder_from_config(raw: dict, source: str = "stored VAE config") -> Autoencoder:
    """An untrained VAE of the architecture ``autoencoder_config`` wrote; the caller loads weights."""
    if raw.get("_class_name") == DIFFUSERS_CLASS:
        return DiffusersVAE.from_config_dict(raw, source)
    return SimVAE(config_from_dict(raw, source)).eval()  # Sim-VAE: any other _class_name is refused there
