"""Metric names -> builders, grouped as in the paper's Sec. 4.1 (Table 4's columns, plus SSIM,
CLIP-IQA, NIQE, IndRMSE and LPIPS-Alex). ``build_metric`` raises ``MissingWeightsError`` (naming
the file and folder) before touching a network whose weights are absent."""

from __future__ import annotations

import torch

from ..weights import WEIGHT_FILES
from .base import FeatureMetric, ImageMetric, MetricInfo

GROUPS = {
    "fidelity": ("psnr", "ssim", "ms_ssim", "deg", "lmd"),
    "perceptual_similarity": ("lpips", "lpips_alex", "dists"),
    "no_reference": ("musiq", "clipiqa", "qalign", "niqe", "piqe"),
    "statistical_distance": ("fid", "fd_dinov2", "mmd_dinov2"),
    "posterior_mean": ("ind_rmse",),
}
METRICS = tuple(name for group in GROUPS.values() for name in group)
TABLE4_METRICS = ("psnr", "ms_ssim", "lpips", "dists", "deg", "lmd", "musiq", "qalign", "fid", "fd_dinov2",
                  "mmd_dinov2")


def metric_info(name: str) -> MetricInfo:
    """The info of a metric without building it (no weights needed)."""
    if name in ("psnr", "ssim", "ind_rmse"):
        from . import pixel

        return {"psnr": pixel.PSNR, "ssim": pixel.SSIM, "ind_rmse": pixel.IndRMSE}[name].info
    if name in ("deg", "lmd"):
        from . import face

        return (face.IdentityAngle if name == "deg" else face.LandmarkDistance).info
    if name in ("lpips", "lpips_alex", "fid", "fd_dinov2", "mmd_dinov2"):
        from . import distribution, library

        return {"lpips": library.lpips_info("vgg"), "lpips_alex": library.lpips_info("alex"),
                "fid": distribution.InceptionFID.info, "fd_dinov2": distribution.dinov2_info("fd"),
                "mmd_dinov2": distribution.dinov2_info("mmd")}[name]
    from . import library

    if name in library.PYIQA_METRICS:
        return library.pyiqa_info(name)
    raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")


def missing_weights(name: str) -> list[str]:
    """Registered files the metric needs that are not in their caches."""
    return [key for key in metric_info(name).weights if not WEIGHT_FILES[key].present()]


def build_metrics(names: list[str], device: str | torch.device = "cpu") -> dict[str, ImageMetric | FeatureMetric]:
    """Pretrained metrics by name; FD- and MMD-DINOv2 share one feature extractor."""
    from . import distribution, library, pixel

    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    built: dict[str, ImageMetric | FeatureMetric] = {}
    dinov2 = None
    for name in names:
        if name in ("psnr", "ssim", "ind_rmse"):
            built[name] = {"psnr": pixel.PSNR, "ssim": pixel.SSIM, "ind_rmse": pixel.IndRMSE}[name]()
        elif name in ("lpips", "lpips_alex"):
            built[name] = library.LPIPS("vgg" if name == "lpips" else "alex", device)
        elif name in library.PYIQA_METRICS:
            built[name] = library.PyiqaMetric(name, device)
        elif name in ("deg", "lmd"):
            from . import face

            built[name] = (face.IdentityAngle if name == "deg" else face.LandmarkDistance).pretrained(device)
        elif name == "fid":
            built[name] = distribution.InceptionFID(device)
        else:
            dinov2 = dinov2 or distribution.DINOv2Features(device)
            built[name] = distribution.DINOv2Distance(name.split("_")[0], dinov2)
    return built
