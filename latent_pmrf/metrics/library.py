"""Per-image metrics wrapped from well-kept libraries, never rewritten: LPIPS v0.1 from ``lpips``
(inputs in [-1, 1]) in both trunks, each under its own name (``LPIPS_TRUNKS``): ``lpips_alex``
is what ``pyiqa.create_metric('lpips')`` computes (pyiqa's default net is AlexNet), the official
Latent-PMRF evaluation behind the paper's tables; ``lpips_vgg`` is PMRF's own evaluation
(``evaluation/calculate_lpips.py``: ``lpips.LPIPS(net='vgg')``). From pyiqa,
MS-SSIM, DISTS, MUSIQ, CLIP-IQA, Q-Align and NIQE with pyiqa's default settings (plus PIQE, a
weight-free no-reference index that is not in the paper, so an offline run has one perceptual axis).

Each pretrained file is checked in its library's cache before the library is asked to build the
network (``latent_pmrf.weights``), so a missing file is an error naming it, never a download
attempt. pyiqa reads its own cache files with ``torch.load(weights_only=False)``: they are the
library's published files, not user input.
"""

from __future__ import annotations

import torch

from ..losses.lpips_net import build_lpips
from ..weights import require
from .base import ImageMetric
from .registry import metric_info

LPIPS_TRUNKS = {"lpips_alex": "alex", "lpips_vgg": "vgg"}  # our name -> the lpips package's net


class LPIPS(ImageMetric):
    """LPIPS by our metric name (``lpips_alex`` / ``lpips_vgg``); ``model`` replaces the pretrained
    network (tests pass one with an untrained trunk)."""

    def __init__(self, name: str, device: str | torch.device = "cpu", model: torch.nn.Module | None = None):
        self.info = metric_info(name)
        self.model = (model if model is not None else build_lpips(LPIPS_TRUNKS[name])).to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(pred.to(self.device) * 2 - 1, ref.to(self.device) * 2 - 1)  # (B, 1, 1, 1)
        return out.flatten().double().cpu()


# pyiqa metrics are registered under pyiqa's own names. Those whose file pyiqa takes as its
# ``pretrained_model_path`` option: our name -> weight key (the others find theirs in their caches)
_PYIQA_MODEL_PATH = {"dists": "dists", "musiq": "musiq", "niqe": "niqe"}


class PyiqaMetric(ImageMetric):
    """A pyiqa metric with its default options. ``pretrained=False`` builds the same network
    untrained (tests); it is available only where pyiqa's architecture allows it."""

    def __init__(self, name: str, device: str | torch.device = "cpu", pretrained: bool = True, **options):
        self.info = metric_info(name)
        if pretrained:
            for key in self.info.weights:
                path = require(key, f"{name} (pyiqa {name!r})")
                if _PYIQA_MODEL_PATH.get(name) == key:
                    options["pretrained_model_path"] = str(path)
        else:
            options["pretrained"] = False
        import pyiqa

        self.model = pyiqa.create_metric(name, device=torch.device(device), **options)
        self.device = device

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        pred = pred.to(self.device).float()
        out = self.model(pred) if self.info.reference == "none" else self.model(pred, ref.to(self.device).float())
        return torch.as_tensor(out).reshape(pred.shape[0]).double().cpu()
