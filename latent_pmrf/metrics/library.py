"""Per-image metrics wrapped from well-kept libraries, never rewritten: LPIPS v0.1 from ``lpips``
(inputs in [-1, 1]) in both trunks, each under its own name (``LPIPS_METRICS``): ``lpips_alex``
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
from .base import ImageMetric, MetricInfo

# our name -> (LPIPS trunk, weight key of the trunk, whose evaluation uses it)
LPIPS_METRICS = {
    "lpips_alex": ("alex", "alexnet", "pyiqa.create_metric('lpips') default; the paper's tables"),
    "lpips_vgg": ("vgg", "vgg16", "PMRF's evaluation, lpips.LPIPS(net='vgg')"),
}


def lpips_info(name: str) -> MetricInfo:
    net, weight_key, used_by = LPIPS_METRICS[name]
    return MetricInfo(name, "gt", False, (weight_key,),
                      f"LPIPS v0.1, {net} trunk (lpips package heads), inputs in [-1, 1]: {used_by}")


class LPIPS(ImageMetric):
    """LPIPS by our metric name (``lpips_alex`` / ``lpips_vgg``); ``model`` replaces the pretrained
    network (tests pass one with an untrained trunk)."""

    def __init__(self, name: str, device: str | torch.device = "cpu", model: torch.nn.Module | None = None):
        self.info = lpips_info(name)
        self.model = (model if model is not None else build_lpips(LPIPS_METRICS[name][0])).to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(pred.to(self.device) * 2 - 1, ref.to(self.device) * 2 - 1)  # (B, 1, 1, 1)
        return out.flatten().double().cpu()


# our name -> (pyiqa name, reference, higher is better, weight keys, {pyiqa option: weight key})
_PYIQA = {
    "ms_ssim": ("ms_ssim", "gt", True, (), {}),
    "dists": ("dists", "gt", False, ("vgg16", "dists"), {"pretrained_model_path": "dists"}),
    "musiq": ("musiq", "none", True, ("musiq",), {"pretrained_model_path": "musiq"}),
    "clipiqa": ("clipiqa", "none", True, ("clip_rn50",), {}),
    "qalign": ("qalign", "none", True, ("qalign",), {}),
    "niqe": ("niqe", "none", False, ("niqe",), {"pretrained_model_path": "niqe"}),
    "piqe": ("piqe", "none", False, (), {}),  # weight-free no-reference index (not in the paper)
}
PYIQA_METRICS = tuple(_PYIQA)


def pyiqa_info(name: str) -> MetricInfo:
    pyiqa_name, reference, higher, weights, _ = _PYIQA[name]
    return MetricInfo(name, reference, higher, weights, f"pyiqa {pyiqa_name!r} with its default options")


class PyiqaMetric(ImageMetric):
    """A pyiqa metric with its default options. ``pretrained=False`` builds the same network
    untrained (tests); it is available only where pyiqa's architecture allows it."""

    def __init__(self, name: str, device: str | torch.device = "cpu", pretrained: bool = True, **options):
        self.info = pyiqa_info(name)
        pyiqa_name, _, _, weights, path_options = _PYIQA[name]
        if pretrained:
            for key in weights:
                path = require(key, f"{name} (pyiqa {pyiqa_name!r})")
                options.update({opt: str(path) for opt, wkey in path_options.items() if wkey == key})
        else:
            options["pretrained"] = False
        import pyiqa

        self.model = pyiqa.create_metric(pyiqa_name, device=torch.device(device), **options)
        self.device = device

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        pred = pred.to(self.device).float()
        out = self.model(pred) if self.info.reference == "none" else self.model(pred, ref.to(self.device).float())
        return torch.as_tensor(out).reshape(pred.shape[0]).double().cpu()
