"""The quickstart's last part: evaluate its restorations like a paper table and draw the
perception-distortion plane (``quickstart.py`` draws the convergence curve).

Four 256² crops of the held-out photo are degraded with fixed seeds; the trained Latent-PMRF
restores them with K = 1, 5 and 25 Euler steps; the degraded input (``lq``) and f(y) are evaluated
as methods of their own, so the table says what restoration gained over its input and the PD plane
shows the paper's picture in miniature: the posterior mean at minimal distortion, more flow steps
trading distortion for perceptual quality. Two reference rows (hollow in the PD plane, never on
its front) say what the VAE allows: ``gt_through_vae``, the ground truth encoded and decoded (the
best any restoration decoded by this VAE can be, were its latent exact), and
``posterior_mean_through_vae``, f(y) encoded and decoded (the flow's start, Eq. 7 without the
noise, decoded as it stands). Every metric whose pretrained file is
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

from ..analysis.pareto import plot_pd
from ..analysis.run_logs import last_checkpoint
from ..data.degradations import DegradationConfig
from ..data.image_io import read_image, to_uint8
from ..metrics.evaluate import evaluate_folders
from ..metrics.registry import METRICS
from ..metrics.results import write_results
from .reconstruct import reconstruct
from .restore import restore

EULER_STEPS = (1, 5, 25)
CROP = 256
QUICKSTART_METRICS = [m for m in METRICS if m != "qalign"]
# y axis of the PD plane: the first perceptual metric that could be computed.
# No-reference quality first (perception in Blau & Michaeli's sense, per image); the set metrics
# (FID, FD/MMD-DINOv2) are in the table but are no axis here: four images cannot estimate a
# 2048-d (FID) or 1024-d (DINOv2) covariance, so their values do not rank methods.
PERCEPTION_AXIS = ("musiq", "clipiqa", "niqe", "piqe", "dists", "lpips_alex", "lpips_vgg")


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
    """Restore, evaluate (results.csv/.md/.json) and plot ``pd.png``."""
    folder = out / "eval"
    lq_dir, gt_dir = _eval_set(photo, degradation, folder)
    ckpt = last_checkpoint(flow_run)
    methods = {}
    for k in EULER_STEPS:
        # overwrite: a re-run of the quickstart (its training continued or finished) evaluates again
        restore(ckpt, lq_dir, folder / f"K{k}", steps=k, seed=0, save_posterior_mean=(k == EULER_STEPS[-1]),
                console=console, overwrite=True)
        methods[f"latent_pmrf_K{k}"] = folder / f"K{k}" / "restored"
    pm_dir = folder / f"K{EULER_STEPS[-1]}" / "posterior_mean"
    through_vae = {}  # encoded (posterior mode) and decoded by the VAE the flow was trained in
    for name, src in (("gt", gt_dir), ("posterior_mean", pm_dir)):
        through_vae[f"{name}_through_vae"] = folder / f"{name}_through_vae"
        reconstruct(out / "vae_export", src, through_vae[f"{name}_through_vae"], quantize="round", console=console,
                    overwrite=True)
    # The degraded input is a row of its own: the table and the PD plane show what restoration gained.
    methods = {"lq": lq_dir, "posterior_mean": pm_dir, **methods, **through_vae}

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
        plot_pd(results, "psnr", y_axis, out / "pd.png", references=list(through_vae))

    return {"results_csv": str(results), "table_markdown": results.with_suffix(".md").read_text(),
            "metrics": computed, "skipped": skipped, "pd_axes": ["psnr", y_axis]}

