import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub look-ups (they retry for about a minute offline)
torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: skipped, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _photo_faces(folder: Path) -> Path:
    """The layout of ../shared/data/faces (hq/ 12 × 512², lq_real/ 4 × 512²) built from scikit-image's
    bundled photos (crops of the astronaut portrait and others), for machines without shared/."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    for sub, count in (("hq", 12), ("lq_real", 4)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            photo = photos[i % len(photos)]
            side = min(photo.shape[:2])
            offset = (i // len(photos)) * side // 8
            crop = photo[offset: offset + side - side // 4, offset: offset + side - side // 4]
            image = Image.fromarray(np.ascontiguousarray(crop)).resize((512, 512), Image.BICUBIC)
            if sub == "lq_real":
                image = image.resize((64, 64), Image.BICUBIC).resize((512, 512), Image.BICUBIC)
            image.save(folder / sub / f"{sub.split('_')[0]}_{i:03d}.png")
    return folder


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory) -> Path:
    """The real face photos of ../shared/data/faces when present; otherwise the same layout made
    from scikit-image's photos, so end-to-end tests run anywhere."""
    path = SHARED / "data" / "faces"
    if (path / "hq").is_dir():
        return path
    return _photo_faces(tmp_path_factory.mktemp("faces"))


@pytest.fixture
def real_faces_dir() -> Path:
    """Only the real photos (tests about face content: detection, identity, landmarks)."""
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


# A SwinIR f(y) of a few thousand parameters (4x unshuffle, window 4): the tests' posterior mean.
TINY_SWINIR_CFG = dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4, scale=4, img_size=16,
                       upsample_channels=8)


def save_tiny_frozen_nets(folder: Path) -> tuple[Path, Path]:
    """The flow's frozen nets, tiny and seeded (0): an f8 Sim-VAE snapshot ``folder/vae`` and a
    ``TINY_SWINIR_CFG`` SwinIR saved as DifFace releases its file, ``folder/pm.pth``."""
    from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
    from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

    torch.manual_seed(0)
    SimVAE(SimVAEConfig(block_out_channels=[8, 8, 8, 8], layers_per_block=1, layers_mid_block=1,
                        latent_channels=4)).save_pretrained(folder / "vae")
    torch.save({"state_dict": SwinIR(SwinIRConfig(**TINY_SWINIR_CFG)).state_dict()}, folder / "pm.pth")
    return folder / "vae", folder / "pm.pth"


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
