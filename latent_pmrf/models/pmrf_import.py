"""PMRF's released blind-face model (Ohayon et al.; paper Table 4 row "PMRF") in our modules.

The release ``ohayonguy/PMRF_blind_face_image_restoration`` on the Hugging Face hub is PMRF's
Lightning module ``MMSERectifiedFlow`` written by ``PyTorchModelHubMixin``: ``config.json`` (its init
arguments: stage "flow", arch "hdit_ImageNet256Sp4", mmse_model_arch "swinir_L", mmse_noise_std, ...)
and ``model.safetensors`` (its ``state_dict()``), which holds

* ``model.*``: the velocity HDiT (k-diffusion ``ImageTransformerDenoiserModelV2``) -> ``HDiT("hdit_pmrf")``;
* ``mmse_model.*``: DifFace's SwinIR, the posterior-mean estimator -> ``SwinIR("swinir_difface512")``;
* ``fid.*``, ``inception_score.*``: torchmetrics' Inception networks of PMRF's validation metrics
  (state-dict members of the Lightning module), skipped.

Module names are the same on both sides after the prefix. The one difference: PMRF's attention
layers store their RoPE frequencies (``...self_attn.pos_emb.freqs``, a persistent buffer there) and
our HDiT recomputes them, so the importer checks the stored values equal ours and drops them.

Value range. PMRF's images u are in [0, 1], ours x = 2u - 1 are in [-1, 1]; t ∈ [0, 1] is the same
(t = 0 source, t = 1 target) and enters HDiT as t itself. PMRF integrates du/dt = v01(u, t) from
u0 = clip(f01(y), 0, 1) + 0.1·ε. Hence dx/dt = 2·du/dt = 2·v01((x + 1)/2, t) (:class:`UnitRangeVelocity`)
from x0 = clip(f(y), -1, 1) + 0.2·ε, f(y) = 2·f01(y) - 1 being what our ``SwinIR`` returns. An Euler
step maps exactly: x_i + 2·v01(u_i, t_i)·dt = 2·(u_i + v01(u_i, t_i)·dt) - 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..weights import PMRF_REPO_ID, PMRF_WEIGHTS_NAME, require
from .hdit import HDiT, HDiTConfig
from .state_dict import load_strict
from .swinir import SwinIR, SwinIRConfig

PMRF_CONFIG_NAME = "config.json"
DOWNLOAD_HINT = (f"get it with `huggingface-cli download {PMRF_REPO_ID} --local-dir DIR` and pass DIR (or "
                 f"DIR/{PMRF_WEIGHTS_NAME}), or run `huggingface-cli download {PMRF_REPO_ID}` to put it in the "
                 f"Hugging Face cache")

VELOCITY_PREFIX = "model."
POSTERIOR_MEAN_PREFIX = "mmse_model."
METRIC_PREFIXES = ("fid.", "inception_score.")  # PMRF's validation metrics, not part of the restorer
ROPE_FREQS_SUFFIX = "pos_emb.freqs"

PMRF_SOURCE_NOISE_STD = 0.1  # PMRF's mmse_noise_std, on [0, 1] images (scripts/train/blind_face_restoration)
# What the release's config.json must say where it says it (PMRF's MMSERectifiedFlow init arguments).
PMRF_RELEASE_CONFIG = {"stage": "flow", "arch": "hdit_ImageNet256Sp4", "mmse_model_arch": "swinir_L",
                       "conditional": False, "eps": 0.0}
EXPECTED_CONTENT = (f"PMRF's MMSERectifiedFlow state dict: '{VELOCITY_PREFIX}*' = HDiT arch hdit_ImageNet256Sp4, "
                    f"'{POSTERIOR_MEAN_PREFIX}*' = SwinIR arch swinir_L (DifFace's swinir_restoration512_L1)")


class UnitRangeVelocity(nn.Module):
    """v(x, t) for x ∈ [-1, 1] from a velocity network ``net(u, t)`` trained on u ∈ [0, 1] images."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def config(self):
        """The wrapped net's config (channels, ``multiple``)."""
        return self.net.config

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # x = 2u - 1  =>  dx/dt = 2·du/dt = 2·v01((x + 1)/2, t)
        return 2 * self.net((x + 1) / 2, t)


@dataclass
class PMRFRelease:
    """PMRF in our conventions: images in [-1, 1], t ∈ [0, 1], Euler from t = 0 (``sample_euler``)."""

    velocity: UnitRangeVelocity  # v(x, t) on [-1, 1] images; .net is the imported HDiT (on [0, 1])
    posterior_mean: SwinIR  # f(y): [-1, 1] -> [-1, 1]; clamp to [-1, 1] before use (PMRF clips to [0, 1])
    source_noise_std: float  # σ_s in [-1, 1] units: 2 × PMRF's mmse_noise_std (0.1) = 0.2


# ---------------------------------------------------------------------------------------- files
def pmrf_release_path(path: str | Path | None = None) -> Path:
    """The release's ``model.safetensors``: ``path`` itself, ``path/model.safetensors`` for a folder, or
    (``path=None``) the copy in the Hugging Face cache. A clear error when it is not there."""
    if path is None:
        return require("pmrf_blind_face", "load_pmrf_release() without a path") / PMRF_WEIGHTS_NAME
    path = Path(path)
    weights = path / PMRF_WEIGHTS_NAME if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(
            f"PMRF release file {str(weights)!r} does not exist (expected {PMRF_WEIGHTS_NAME} of {PMRF_REPO_ID}, "
            f"{EXPECTED_CONTENT}); {DOWNLOAD_HINT}.")
    return weights


def read_state_dict(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a torch file (weights_only) holding a plain state dict."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path} is not a readable safetensors file (expected {EXPECTED_CONTENT}): {err}") from err
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle errors, zip errors, non-allowlisted globals
        raise ValueError(f"{path} is neither safetensors nor a torch state dict torch.load(weights_only=True) "
                         f"can read (expected {EXPECTED_CONTENT}): {err}") from err
    if isinstance(state, Mapping) and "ema" in state:
        raise ValueError(f"{path} looks like a Lightning training checkpoint whose EMA weights are stored apart "
                         f"('ema'); they are not applied here. Use the Hugging Face release instead: {DOWNLOAD_HINT}.")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (expected {EXPECTED_CONTENT})")
    return dict(state)


def read_release_config(weights: Path) -> dict:
    """``config.json`` beside the weights (empty if absent), checked against PMRF_RELEASE_CONFIG."""
    path = weights.parent / PMRF_CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    wrong = {k: config[k] for k, v in PMRF_RELEASE_CONFIG.items() if k in config and config[k] != v}
    if wrong:
        raise ValueError(f"{path} describes another PMRF model: {wrong}, expected {PMRF_RELEASE_CONFIG} "
                         f"(the blind-face release of {PMRF_REPO_ID})")
    return config


# ---------------------------------------------------------------------------------------- key layout
def _rope_freqs(velocity: HDiT) -> dict[str, torch.Tensor]:
    return {name: buf for name, buf in velocity.named_buffers() if name.endswith(ROPE_FREQS_SUFFIX)}


def pmrf_state_dict(velocity: HDiT, posterior_mean: SwinIR) -> dict[str, torch.Tensor]:
    """The state dict PMRF's MMSERectifiedFlow holds for these two modules (its key layout, RoPE
    frequencies included); the inverse of :func:`split_pmrf_state_dict`."""
    state = {VELOCITY_PREFIX + k: v for k, v in {**velocity.state_dict(), **_rope_freqs(velocity)}.items()}
    state.update({POSTERIOR_MEAN_PREFIX + k: v for k, v in posterior_mean.state_dict().items()})
    return state


def split_pmrf_state_dict(state: Mapping[str, torch.Tensor], source: str
                          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """PMRF's state dict -> (HDiT state dict, HDiT RoPE frequencies, SwinIR state dict) in our names.
    Metric modules are dropped; any other key is an error."""
    velocity, freqs, posterior_mean, unknown = {}, {}, {}, []
    for key, value in state.items():
        if key.startswith(VELOCITY_PREFIX):
            name = key.removeprefix(VELOCITY_PREFIX)
            (freqs if name.endswith(ROPE_FREQS_SUFFIX) else velocity)[name] = value
        elif key.startswith(POSTERIOR_MEAN_PREFIX):
            posterior_mean[key.removeprefix(POSTERIOR_MEAN_PREFIX)] = value
        elif not key.startswith(METRIC_PREFIXES):
            unknown.append(key)
    if unknown or not velocity or not posterior_mean:
        found = sorted({k.split(".")[0] + "." for k in state})
        raise ValueError(f"{source} is not {EXPECTED_CONTENT}; top-level prefixes found: {found}"
                         + (f"; unexpected keys ({len(unknown)}): {sorted(unknown)[:5]}" if unknown else ""))
    return velocity, freqs, posterior_mean


def _check_rope_freqs(model: HDiT, stored: Mapping[str, torch.Tensor], source: str) -> None:
    ours = _rope_freqs(model)
    missing, unexpected = sorted(set(ours) - set(stored)), sorted(set(stored) - set(ours))
    wrong = sorted(k for k in set(ours) & set(stored)
                   if stored[k].shape != ours[k].shape
                   or not torch.allclose(stored[k].float().cpu(), ours[k].float().cpu(), rtol=1e-4, atol=0.0))
    if missing or unexpected or wrong:
        raise ValueError(f"{source}: the stored RoPE frequencies do not match our HDiT's (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, different values or shapes {wrong[:3]})")


# ---------------------------------------------------------------------------------------- import
def load_pmrf_release(path: str | Path | None = None, *, velocity_config: HDiTConfig | None = None,
                      posterior_mean_config: SwinIRConfig | None = None,
                      map_location: str | torch.device = "cpu") -> PMRFRelease:
    """PMRF's blind-face release as our modules, loaded strictly, in eval mode. ``path``: the
    ``model.safetensors``, its folder, or None for the Hugging Face cache. The configs default to the
    release's architecture (``hdit_pmrf``, ``swinir_difface512``)."""
    weights = pmrf_release_path(path)
    config = read_release_config(weights)
    velocity_state, freqs, posterior_state = split_pmrf_state_dict(read_state_dict(weights, map_location), str(weights))

    velocity = HDiT(velocity_config or HDiTConfig.preset("hdit_pmrf"))
    _check_rope_freqs(velocity, freqs, str(weights))
    load_strict(velocity, velocity_state, f"{weights} ('{VELOCITY_PREFIX}*' as our HDiT)",
                f"Expected {EXPECTED_CONTENT}.")
    posterior_mean = SwinIR(posterior_mean_config or SwinIRConfig.preset("swinir_difface512"))
    load_strict(posterior_mean, posterior_state, f"{weights} ('{POSTERIOR_MEAN_PREFIX}*' as our SwinIR)",
                f"Expected {EXPECTED_CONTENT}.")

    noise_std = float(config.get("mmse_noise_std", PMRF_SOURCE_NOISE_STD))
    return PMRFRelease(velocity=UnitRangeVelocity(velocity).eval(), posterior_mean=posterior_mean.eval(),
                       source_noise_std=2 * noise_std)  # σ on [0, 1] images is 2σ on [-1, 1] images
