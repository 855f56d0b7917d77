"""LPIPS (Zhang et al. 2018) from the ``lpips`` package, with an offline-safe weight check.

The linear heads ship inside the package; the VGG16/AlexNet trunk is torchvision's, read from
``$TORCH_HOME/hub/checkpoints``. Checking for the file first turns a hanging download attempt
into an error that names the file and folder.
"""

from __future__ import annotations

import warnings

from torch import nn

from ..hub_files import torch_hub_checkpoint

LPIPS_TRUNK_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def build_lpips(net: str = "vgg") -> nn.Module:
    """Frozen ``lpips.LPIPS``; inputs in [-1, 1], output (B, 1, 1, 1)."""
    if net not in LPIPS_TRUNK_FILES:
        raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_TRUNK_FILES)}, got {net!r}")
    torch_hub_checkpoint(LPIPS_TRUNK_FILES[net], f"LPIPS ({net})")
    import lpips

    with warnings.catch_warnings():  # torchvision's deprecated `pretrained=` argument inside lpips
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, verbose=False)
    return model.eval().requires_grad_(False)
