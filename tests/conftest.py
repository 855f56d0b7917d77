import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub look-ups (they retry for about a minute offline)
torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def faces_dir() -> Path:
    path = SHARED / "data" / "faces"
    if not (path / "hq").is_dir():
        pytest.skip(f"real test photos not found at {path} (shared/data is not beside this checkout)")
    return path


@pytest.fixture
def reference_dir() -> Path:
    path = SHARED / "reference"
    if not (path / "official_c32_keys.json").is_file():
        pytest.skip(f"official reference files not found at {path}")
    return path


def tiny_vae_overrides() -> dict:
    """Shrinks any Sim-VAE preset to a few thousand parameters (widths divisible by 32 for GroupNorm)."""
    return dict(block_out_channels=[32, 64], layers_per_block=1, layers_mid_block=2, latent_channels=4)
