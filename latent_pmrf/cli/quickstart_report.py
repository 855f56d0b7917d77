"""The quickstart's last part: evaluate its restorations like a paper table, then draw the
convergence curve of its flow run and the perception-distortion plane.

Four 256² crops of the held-out photo are degraded with fixed seeds; the trained Latent-PMRF
restores them with K = 1, 5 and 25 Euler steps, and f(y) is evaluated as a method of its own, so
the PD plane shows the paper's picture in miniature: the posterior mean at minimal distortion,
more flow steps trading distortion for perceptual quality. Every metric whose pretrained file is
present is computed; the others are listed as skipped with the missing file. Q-Align (a 7B
model) is left to ``latent-pmrf evaluate`` on a GPU. Set-level metrics (FID, FD/MMD-DINOv2) on
four images run the real computation but are not meaningful at this size.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from ..analysis.convergence import plot_convergence
from ..analysis.pareto import plot_pd
from ..analysis.run_logs import last_checkpoint
from ..data.degradations import DegradationConfig
from ..data.image_io import read_image, to_uint8
from ..metrics.evaluate import evaluate_folders
from ..metrics.registry import METRICS
from ..metrics.results import write_results
from .restore import restore

EULER_STEPS = (1, 5, 25)
CROP = 256
QUICKSTART_METRICS = [m for m in METRICS if m != "qalign"]
# y axis of the PD plane: the first perceptual metric that could be computed
PERCEPTION_AXIS = ("fid", "fd_dinov2", "mmd_dinov2", "dists", "lpips_alex", "lpips_vgg", "piqe")


def _eval_set(photo: Path, degradation: DegradationConfig, folder: Path) -> tuple[Path, Path]:
    """Degraded (seed i) and clean 256² crops of ``photo`` in folder/lq and folder/gt."""
    from ..data.degradations import BFRDegradation

    deg = BFRDegradation(replace(degradation, hflip_prob=0.0, gray_prob=0.0))
    image = read_image(photo)
    lq_dir, gt_dir = folder / "lq", folder / "gt"
    lq_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    corners = [(y, x) for y in (0, image.shape[0] - CROP) for x in (0, image.shape[1] - CROP)]
    for i, (y, x) in enumerate(corners):
        lq, gt = deg(image[y:y + CROP, x:x + CROP], np.random.default_rng(i))
        for d, im in ((lq_dir, lq), (gt_dir, gt)):
            Image.fromarray(to_uint8(im, (0, 1))).save(d / f"crop_{i}.png")
    return lq_dir, gt_dir


def evaluate_quickstart(out: Path, photo: Path, flow_run: Path, degradation: DegradationConfig, console: Console) -> dict:
    """Restore, evaluate (results.csv/.md/.json), plot ``pd.png`` and ``convergence.png``."""
    folder = out / "eval"
    lq_dir, gt_dir = _eval_set(photo, degradation, folder)
    ckpt = last_checkpoint(flow_run)
    methods = {}
    for k in EULER_STEPS:
        restore(ckpt, lq_dir, folder / f"K{k}", steps=k, seed=0, save_posterior_mean=(k == EULER_STEPS[-1]),
                console=console)
        methods[f"latent_pmrf_K{k}"] = folder / f"K{k}" / "restored"
    pm_dir = folder / f"K{EULER_STEPS[-1]}" / "posterior_mean"
    methods = {"posterior_mean": pm_dir, **methods}

    results = folder / "results.csv"
    results.unlink(missing_ok=True)
    skipped: dict[str, str] = {}
    computed: list[str] = []
    for label, pred in methods.items():
        result = evaluate_folders(pred, gt_dir, pm_dir, QUICKSTART_METRICS, label=label, skip_missing=True,
                                  progress=False)
        write_results(result, results)
        skipped, computed = result.skipped, list(result.summary)
    skipped["qalign"] = "7B-parameter model: run `latent-pmrf evaluate --metrics qalign` on a GPU"

    y_axis = next((m for m in PERCEPTION_AXIS if m in computed), None)
    if y_axis is None:
        skipped["pd.png"] = f"no perceptual metric available (tried {', '.join(PERCEPTION_AXIS)})"
    else:
        plot_pd(results, "psnr", y_axis, out / "pd.png")

    curve_metric = next((m for m in ("fid", "dists", "mmd_dinov2", "psnr") if m in computed), "psnr")
    curve = plot_convergence([flow_run / "convergence.csv"], curve_metric, out / "convergence.png",
                             labels=["Latent-PMRF (quickstart)"])  # direction from the metric table
    return {"results_csv": str(results), "table_markdown": results.with_suffix(".md").read_text(),
            "metrics": computed, "skipped": skipped, "pd_axes": ["psnr", y_axis], "convergence_metric": curve["metric"]}
