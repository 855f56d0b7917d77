"""LPIPS (Zhang et al. 2018) from the ``lpips`` package, with an offline-safe weight check.

The linear heads ship inside the package; the VGG16/AlexNet trunk is torchvision's, read from
``$TORCH_HOME/hub/checkpoints``. Checking for the file first turns a hanging download attempt
into an error that names the file and folder.
"""

from __future__ import annotations

import warnings

from torch import nn

from ..weights import WEIGHT_FILES, require

LPIPS_TRUNK_WEIGHTS = {"vgg": "vgg16", "alex": "alexnet"}  # net -> key of weights.WEIGHT_FILES
LPIPS_TRUNK_FILES = {net: WEIGHT_FILES[key].filename for net, key in LPIPS_TRUNK_WEIGHTS.items()}


def build_lpips(net: str = "vgg") -> nn.Module:
    """Frozen ``lpips.LPIPS``; inputs in [-1, 1], output (B, 1, 1, 1)."""
    if net not in LPIPS_TRUNK_WEIGHTS:
        raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_TRUNK_WEIGHTS)}, got {net!r}")
    require(LPIPS_TRUNK_WEIGHTS[net], f"LPIPS ({net})")
    import lpips

    with warnings.catch_warnings():  # torchvision's deprecated `pretrained=` argument inside lpips
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, verbose=False)
    return model.eval().requires_grad_(False)
