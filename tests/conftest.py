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


def randomize(model, seed: int = 0):
    """Fan-in-scaled random weights everywhere: norm affines around 1 (their init is ones/zeros),
    relative-position bias tables, biases; returns the model in eval mode."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if name.endswith("relative_position_bias_table"):
                p.copy_(0.5 * noise)
            elif p.ndim > 1:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return model.eval()
