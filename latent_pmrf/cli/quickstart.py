"""The README's quickstart, end to end on CPU on scikit-image's photos: a small Sim-VAE, then a
tiny posterior-mean SwinIR and a tiny Latent-PMRF in that VAE's latent space, then the
restoration of a degraded held-out photo.

Writes, under ``--out``: ``vae/``, ``posterior_mean/``, ``latent_pmrf/`` (the Lightning runs),
``vae_export/`` (EMA weights in the official format), ``reconstruction.png`` (held-out photo |
reconstruction), ``restoration.png`` (LQ | posterior mean | Latent-PMRF | GT), ``loss_curve.png``,
``eval/results.{csv,md,json}`` (the evaluation table of its restorations, see
``quickstart_report.py``), ``convergence.png``, ``pd.png`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from ..data.image_folder import to_tensor
from ..data.image_io import read_image, to_uint8
from ..lightning.export import export_vae
from ..analysis.run_logs import last_checkpoint, read_logged_metrics
from ..lightning.tasks import load_task_config, train
from ..metrics.distortion import psnr
from ..models.sim_vae import SimVAE
from ..weights import WEIGHT_FILES
from .quickstart_report import evaluate_quickstart

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG = CONFIGS / "vae" / "quickstart.yaml"
# Colour photographs that ship inside scikit-image (no download). The astronaut portrait is held out.
TRAIN_PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png",
                "retina.jpg", "color.png"]
HELD_OUT = "astronaut.png"

console = Console(stderr=True)


def _skimage_photo_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def _stage_photos(data_dir: Path) -> tuple[Path, Path]:
    src = _skimage_photo_dir()
    train, val = data_dir / "train", data_dir / "val"
    for folder, names in ((train, TRAIN_PHOTOS), (val, [HELD_OUT])):
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            if not (src / name).is_file():
                raise FileNotFoundError(f"scikit-image photo {src / name} is missing; reinstall scikit-image")
            target = folder / (Path(name).stem + ".png")
            if not target.exists():
                Image.fromarray(to_uint8(read_image(src / name), (0, 1))).save(target)
    return train, val


def _plot_loss(run_dir: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in read_logged_metrics(run_dir) if row.get("train/total")]
    if not rows:
        raise ValueError(f"{run_dir}/csv has no train/total values to plot")
    steps, losses = [int(r["step"]) for r in rows], [float(r["train/total"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses)
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title="Sim-VAE quickstart")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def _restore_held_out(out: Path, val_dir: Path, flow_run: Path, degradation, steps: int = 25) -> dict:
    """Degrade the held-out photo (fixed seed), restore it, save LQ | f(y) | restored | GT."""
    from ..data.degradations import BFRDegradation
    from ..flow import RestorationPipeline

    pipeline = RestorationPipeline.from_checkpoint(last_checkpoint(flow_run))  # EMA weights, frozen nets included
    deg = BFRDegradation(replace(degradation, hflip_prob=0.0, gray_prob=0.0))
    image = read_image(val_dir / (Path(HELD_OUT).stem + ".png"))
    lq, gt = deg(image, np.random.default_rng(0))
    m = pipeline.size_multiple
    h, w = (gt.shape[0] // m) * m, (gt.shape[1] // m) * m
    x_lq, x_gt = to_tensor(lq[:h, :w])[None], to_tensor(gt[:h, :w])[None]
    restored, pm = pipeline.restore(x_lq, steps, generator=torch.Generator().manual_seed(0))

    def psnr_db(a: torch.Tensor) -> float:
        return float(psnr((a + 1) / 2, (x_gt + 1) / 2)[0])

    row = torch.cat([x_lq[0], pm[0], restored[0], x_gt[0]], dim=2).clamp(-1, 1)
    Image.fromarray(to_uint8(row)).save(out / "restoration.png")
    return {"lq_psnr_db": psnr_db(x_lq), "posterior_mean_psnr_db": psnr_db(pm),
            "latent_pmrf_psnr_db": psnr_db(restored),
            "euler_steps": steps}


def run_quickstart(out: str | Path, max_steps: int = 600, restoration_steps: int = 300) -> dict:
    out = Path(out)
    start = time.time()
    train_dir, val_dir = _stage_photos(out / "data")
    overrides = [f"data.train=[{{root: {train_dir}}}]", f"data.val_dir={val_dir}",
                 f"trainer.output_dir={out / 'vae'}", f"trainer.max_steps={max_steps}",
                 f"trainer.log_every_n_steps={min(10, max_steps)}"]
    skipped = {}
    if not WEIGHT_FILES["vgg19"].present():
        overrides.append("loss.perceptual_weight=0")
        skipped["perceptual_loss"] = f"{WEIGHT_FILES['vgg19'].path} not found: trained with L1 + KL only"
    use_lpips = WEIGHT_FILES["vgg16"].present()
    if not use_lpips:
        skipped["validation LPIPS-VGG"] = f"{WEIGHT_FILES['vgg16'].path} not found"
    for what, why in skipped.items():
        console.print(f"[yellow]note[/yellow]: {what} skipped: {why}")

    vae_task, cfg = load_task_config(CONFIG, overrides)
    run_dir = train(vae_task, cfg, val_lpips=use_lpips)
    export_dir, used_ema = export_vae(last_checkpoint(run_dir), out / "vae_export")

    # Reconstruct the held-out photo with the exported (EMA) weights, read back from disk.
    vae = SimVAE.from_pretrained(export_dir).eval()
    image = read_image(val_dir / (Path(HELD_OUT).stem + ".png"))
    f = vae.config.downsample_factor
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    x = to_tensor(image[:h, :w])[None]
    with torch.no_grad():
        recon = vae.decode(vae.encode(x).mode()).clamp(-1, 1)
    pred, gt = (recon[0] + 1) / 2, (x[0] + 1) / 2
    held_out_psnr = float(psnr(pred[None], gt[None])[0])  # RGB, 8-bit grid, as the paper's evaluation
    side_by_side = torch.cat([gt, pred], dim=2).permute(1, 2, 0).numpy()
    Image.fromarray(to_uint8(side_by_side, (0, 1))).save(out / "reconstruction.png")
    _plot_loss(run_dir, out / "loss_curve.png")

    # Posterior mean, then the latent flow on top of the exported VAE and that posterior mean.
    data = [f"data.train=[{{root: {train_dir}}}]", f"data.val_dir={val_dir}",
            f"trainer.max_steps={restoration_steps}", f"trainer.val_every_n_steps={restoration_steps}",
            "trainer.progress_bar=true"]
    pm_task, pm_cfg = load_task_config(CONFIGS / "posterior_mean" / "quickstart.yaml",
                                       [*data, f"trainer.output_dir={out / 'posterior_mean'}"])
    pm_run = train(pm_task, pm_cfg)
    flow_task, flow_cfg = load_task_config(CONFIGS / "latent_pmrf" / "quickstart.yaml",
                                           [*data, f"trainer.output_dir={out / 'latent_pmrf'}", f"vae={export_dir}",
                                            f"posterior_mean.checkpoint={last_checkpoint(pm_run)}"])
    flow_run = train(flow_task, flow_cfg)
    restoration = _restore_held_out(out, val_dir, flow_run, flow_cfg.data.degradation)
    report = evaluate_quickstart(out, val_dir / (Path(HELD_OUT).stem + ".png"), flow_run,
                                 flow_cfg.data.degradation, console)

    metrics = {
        "held_out_image": HELD_OUT,
        "held_out_psnr_db": held_out_psnr,
        "steps": cfg.trainer.max_steps,
        "train_images": len(TRAIN_PHOTOS),
        "vae_parameters": sum(p.numel() for p in vae.parameters()),
        "ema_weights": used_ema,
        "restoration": {**restoration, "posterior_mean_steps": restoration_steps, "flow_steps": restoration_steps},
        "evaluation": {k: v for k, v in report.items() if k != "table_markdown"},
        "seconds": round(time.time() - start, 1),
        "skipped": skipped,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    console.print_json(data=metrics)
    console.print(report["table_markdown"])
    for name in ("reconstruction.png", "restoration.png", "loss_curve.png", "convergence.png", "pd.png",
                 "eval/results.csv", "metrics.json", "vae_export"):
        console.print(f"wrote {out / name}")
    return metrics
