"""Metric names -> builders, grouped as in the paper's Sec. 4.1 (Table 4's columns, plus SSIM,
CLIP-IQA, NIQE, LPIPS-VGG and both IndRMSE aggregations). A metric with variants names the
variant: ``lpips_alex`` / ``lpips_vgg``, ``ind_rmse`` / ``ind_rmse_per_image``; there is no bare
``lpips``. ``build_metrics`` raises ``MissingWeightsError`` (naming the file and folder) before
touching a network whose weights are absent."""

from __future__ import annotations

import torch

from ..weights import WEIGHT_FILES
from .base import FeatureMetric, ImageMetric, MetricInfo

GROUPS = {
    "fidelity": ("psnr", "ssim", "ms_ssim", "deg", "lmd"),
    "perceptual_similarity": ("lpips_alex", "lpips_vgg", "dists"),
    "no_reference": ("musiq", "clipiqa", "qalign", "niqe", "piqe"),
    "statistical_distance": ("fid", "fd_dinov2", "mmd_dinov2"),
    "posterior_mean": ("ind_rmse", "ind_rmse_per_image"),
}
METRICS = tuple(name for group in GROUPS.values() for name in group)
# Table 4's metric columns, as in analysis/paper_tables.yaml (LPIPS: pyiqa's default, AlexNet)
TABLE4_METRICS = ("psnr", "ms_ssim", "lpips_alex", "dists", "deg", "lmd", "musiq", "qalign", "fid", "fd_dinov2",
                  "mmd_dinov2")
# names that no longer exist -> why, so an old command or results file fails with a pointer
RETIRED = {"lpips": "'lpips' is ambiguous: use lpips_alex (pyiqa's default, the paper's tables) "
                    "or lpips_vgg (PMRF's evaluation; what this repo's 'lpips' used to be)"}
_PIXEL = ("psnr", "ssim", "ind_rmse", "ind_rmse_per_image")


def _unknown_metrics_error(names: list[str]) -> ValueError:
    hints = "".join(f"; {RETIRED[n]}" for n in names if n in RETIRED)
    return ValueError(f"unknown metric(s) {', '.join(names)}{hints}; known: {', '.join(METRICS)}")


def _pixel_metric(name: str):
    from . import pixel

    return {"psnr": pixel.PSNR, "ssim": pixel.SSIM, "ind_rmse": pixel.IndRMSE,
            "ind_rmse_per_image": pixel.IndRMSEPerImage}[name]


def metric_info(name: str) -> MetricInfo:
    """The info of a metric without building it (no weights needed)."""
    if name in _PIXEL:
        return _pixel_metric(name).info
    if name in ("deg", "lmd"):
        from . import face

        return (face.IdentityAngle if name == "deg" else face.LandmarkDistance).info
    if name in ("fid", "fd_dinov2", "mmd_dinov2"):
        from . import distribution

        return {"fid": distribution.InceptionFID.info, "fd_dinov2": distribution.dinov2_info("fd"),
                "mmd_dinov2": distribution.dinov2_info("mmd")}[name]
    from . import library

    if name in library.LPIPS_METRICS:
        return library.lpips_info(name)
    if name in library.PYIQA_METRICS:
        return library.pyiqa_info(name)
    raise _unknown_metrics_error([name])


def missing_weights(name: str) -> list[str]:
    """Registered files the metric needs that are not in their caches."""
    return [key for key in metric_info(name).weights if not WEIGHT_FILES[key].present()]


def build_metrics(names: list[str], device: str | torch.device = "cpu") -> dict[str, ImageMetric | FeatureMetric]:
    """Pretrained metrics by name; FD- and MMD-DINOv2 share one feature extractor."""
    from . import distribution, library

    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise _unknown_metrics_error(unknown)
    built: dict[str, ImageMetric | FeatureMetric] = {}
    dinov2 = None
    for name in names:
        if name in _PIXEL:
            built[name] = _pixel_metric(name)()
        elif name in library.LPIPS_METRICS:
            built[name] = library.LPIPS(name, device)
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
