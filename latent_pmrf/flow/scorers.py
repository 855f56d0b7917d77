"""Reference-free scorers for early-branching selection (``early_branching.py``), one table, ``SCORERS``:
name -> what it measures, the pretrained files it needs, its builder. A scorer maps images
(B, 3, H, W) in [0, 1] to (B,) scores, higher is better.

- ``depth`` / ``depth_median``: GenSIRR's criterion, the candidate whose depth map is deepest wins
  (a reflection is seen as a foreground layer; removing it reveals the farther background).
  Depth-Anything-V2-Small through ``transformers``. Its relative models predict *relative inverse
  depth* (disparity, up to an unknown scale and shift; near is large): Depth Anything (Yang et al.
  2024, Sec. 3.1) maps depth to disparity d = 1/t before its affine-invariant loss and V2 keeps the
  recipe; its authors answer "the model predicts inverse depth (1 / depth), so smaller prediction
  corresponds to larger depth" (DepthAnything/Depth-Anything-V2 issue 174; LiheYoung/Depth-Anything
  issue 72); transformers' head ends in a ReLU (non-negative) for ``depth_estimation_type=
  "relative"``. So deepest = smallest disparity: the score is minus the mean (or median)
  disparity. The median ranks exactly as the median depth would (1/x is monotone); the mean ranks
  by the harmonic mean of depth. Relative maps of different images share no scale, so the
  comparison leans on the k candidates of one image being near-identical scenes. A metric-depth
  checkpoint (``depth_estimation_type="metric"``, metres) is scored by plus its depth.
- every no-reference metric of the metric table (``metrics/registry.py``: MUSIQ, CLIP-IQA, Q-Align,
  NIQE, PIQE), built through it (its weight checks and errors), negated where lower is better.
- ``sharpness``: variance of the Laplacian of the luma (weight-free; tests and quick runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..metrics.registry import GROUPS, metric_info
from ..weights import MissingWeightsError, require

Scorer = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [0, 1] -> (B,), higher is better

DEPTH_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
DEPTH_REDUCTIONS = ("mean", "median")


class DepthScorer:
    """Minus the mean or median disparity of Depth-Anything-V2 (relative model): deeper scores higher.
    ``folder``: a local copy of the model (default: the Hugging Face cache's
    depth-anything/Depth-Anything-V2-Small-hf, weight key ``depth_anything_v2_small``)."""

    def __init__(self, reduction: str = "mean", device: str | torch.device = "cpu", folder: str | Path | None = None):
        if reduction not in DEPTH_REDUCTIONS:
            raise ValueError(f"depth reduction must be one of {DEPTH_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        folder = Path(folder) if folder is not None else require("depth_anything_v2_small", "scorer 'depth'")
        absent = [name for name in DEPTH_MODEL_FILES if not (folder / name).is_file()]
        if absent:
            raise MissingWeightsError(f"scorer 'depth' needs {', '.join(absent)} in {folder} (a snapshot of "
                                      "depth-anything/Depth-Anything-V2-Small-hf)")
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True).to(device).eval()
        kind = getattr(self.model.config, "depth_estimation_type", "relative")
        self.sign = -1.0 if kind == "relative" else 1.0  # disparity: near is large; metric: depth in metres
        self.device = device

    @torch.no_grad()
    def prediction(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, h, w) the model's output (disparity for a relative model),
        at its input size (the processor's resize: aspect kept, sides multiples of 14)."""
        inputs = self.processor(images=list(images.float()), return_tensors="pt", do_rescale=False,
                                device=str(self.device))
        return self.model(pixel_values=inputs["pixel_values"]).predicted_depth

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flat = self.prediction(images).flatten(1).float()  # (B, h·w)
        reduced = flat.mean(1) if self.reduction == "mean" else flat.median(1).values
        return self.sign * reduced.to(images.device)


class MetricScorer:
    """A no-reference metric of the metric table as a scorer: its value, negated if lower is better."""

    def __init__(self, name: str, device: str | torch.device = "cpu"):
        from ..metrics.registry import build_metrics

        self.metric = build_metrics([name], device)[name]
        self.sign = 1.0 if self.metric.info.higher_is_better else -1.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.sign * self.metric(images.float()).to(images.device, torch.float32)


# ITU-R BT.601 luma and the 4-neighbour Laplacian
_LUMA = (0.299, 0.587, 0.114)
_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Variance of the Laplacian of the luma (Pech-Pacheco et al. 2000): (B, 3, H, W) -> (B,); a
    blurred image scores lower."""
    luma = torch.einsum("bchw,c->bhw", images.float(), images.new_tensor(_LUMA, dtype=torch.float32))[:, None]
    laplacian = F.conv2d(luma, luma.new_tensor(_LAPLACIAN)[None, None])  # (B, 1, H - 2, W - 2)
    return laplacian.flatten(1).var(1)


@dataclass(frozen=True)
class ScorerSpec:
    name: str
    description: str
    weights: tuple[str, ...]  # keys of latent_pmrf.weights.WEIGHT_FILES
    build: Callable[[str | torch.device], Scorer]


SCORERS: dict[str, ScorerSpec] = {spec.name: spec for spec in [
    ScorerSpec("depth", "GenSIRR's DEBS: minus the mean Depth-Anything-V2-Small disparity (deepest wins)",
               ("depth_anything_v2_small",), lambda device: DepthScorer("mean", device)),
    ScorerSpec("depth_median", "minus the median Depth-Anything-V2-Small disparity (= deepest median depth)",
               ("depth_anything_v2_small",), lambda device: DepthScorer("median", device)),
    ScorerSpec("sharpness", "variance of the Laplacian of the luma (weight-free)", (), lambda device: sharpness),
    *(ScorerSpec(name, f"{metric_info(name).description}, {'higher' if metric_info(name).higher_is_better else 'lower'}"
                       " is better", metric_info(name).weights,
                 lambda device, name=name: MetricScorer(name, device))
      for name in GROUPS["no_reference"]),
]}


def build_scorer(name: str, device: str | torch.device = "cpu") -> Scorer:
    """The scorer of ``SCORERS[name]`` on ``device``; its missing weights raise MissingWeightsError
    (naming the file and folder) before any network is built."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(SCORERS)}")
    return SCORERS[name].build(device)
