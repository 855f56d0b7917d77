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
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from ..config import load_config
from ..data.image_folder import to_tensor
from ..data.image_io import read_image
from ..lightning.export import export_vae
from ..lightning.train_vae import fit_vae, last_checkpoint, read_logged_metrics
from ..lightning.vae_config import VAETrainConfig
from ..losses.lpips_net import LPIPS_TRUNK_FILES
from ..losses.perceptual import VGG19_WEIGHTS_FILE
from ..metrics.distortion import psnr
from ..models.sim_vae import SimVAE, SimVAEConfig
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
                Image.fromarray((read_image(src / name) * 255).round().astype(np.uint8)).save(target)
    return train, val


def _hub_file_present(name: str) -> bool:
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


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


def _restore_held_out(out: Path, val_dir: Path, flow_run: Path, steps: int = 25) -> dict:
    """Degrade the held-out photo (fixed seed), restore it, save LQ | f(y) | restored | GT."""
    from ..data.degradations import BFRDegradation
    from ..lightning.flow_module import FlowModule

    module = FlowModule.from_checkpoint(last_checkpoint(flow_run))  # EMA weights, frozen nets included
    deg = BFRDegradation.from_dict(dict(module.cfg.data.degradation, hflip_prob=0.0, gray_prob=0.0))
    image = read_image(val_dir / (Path(HELD_OUT).stem + ".png"))
    lq, gt = deg(image, np.random.default_rng(0))
    m = module.size_multiple
    h, w = (gt.shape[0] // m) * m, (gt.shape[1] // m) * m
    x_lq, x_gt = to_tensor(lq[:h, :w])[None], to_tensor(gt[:h, :w])[None]
    restored, pm = module.restore(x_lq, steps, generator=torch.Generator().manual_seed(0))

    def psnr_db(a: torch.Tensor) -> float:
        return float(psnr((a + 1) / 2, (x_gt + 1) / 2)[0])

    row = torch.cat([x_lq[0], pm[0], restored[0], x_gt[0]], dim=2).clamp(-1, 1)
    Image.fromarray(((row + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(out / "restoration.png")
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
    if not _hub_file_present(VGG19_WEIGHTS_FILE):
        overrides.append("loss.perceptual_weight=0")
        skipped["perceptual_loss"] = f"{VGG19_WEIGHTS_FILE} not in {torch.hub.get_dir()}/checkpoints: trained with L1 + KL only"
    use_lpips = _hub_file_present(LPIPS_TRUNK_FILES["vgg"])
    if not use_lpips:
        skipped["validation LPIPS-VGG"] = f"{LPIPS_TRUNK_FILES['vgg']} not in {torch.hub.get_dir()}/checkpoints"
    for what, why in skipped.items():
        console.print(f"[yellow]note[/yellow]: {what} skipped: {why}")

    cfg = load_config(VAETrainConfig, CONFIG, overrides, presets=SimVAEConfig.preset)
    run_dir = fit_vae(cfg, val_lpips=use_lpips)
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
    Image.fromarray((side_by_side * 255).round().astype(np.uint8)).save(out / "reconstruction.png")
    _plot_loss(run_dir, out / "loss_curve.png")

    # Posterior mean, then the latent flow on top of the exported VAE and that posterior mean.
    from ..lightning.restoration_config import FlowTrainConfig, PosteriorMeanTrainConfig
    from ..lightning.train_restoration import fit_flow, fit_posterior_mean
    from ..models.velocity import velocity_preset
    from ..models.swinir import SwinIRConfig

    data = [f"data.train=[{{root: {train_dir}}}]", f"data.val_dir={val_dir}",
            f"trainer.max_steps={restoration_steps}", f"trainer.val_every_n_steps={restoration_steps}",
            "trainer.progress_bar=true"]
    pm_cfg = load_config(PosteriorMeanTrainConfig, CONFIGS / "posterior_mean" / "quickstart.yaml",
                         [*data, f"trainer.output_dir={out / 'posterior_mean'}"], presets=SwinIRConfig.preset)
    pm_run = fit_posterior_mean(pm_cfg)
    flow_cfg = load_config(FlowTrainConfig, CONFIGS / "latent_pmrf" / "quickstart.yaml",
                           [*data, f"trainer.output_dir={out / 'latent_pmrf'}", f"vae={export_dir}",
                            f"posterior_mean.checkpoint={last_checkpoint(pm_run)}"],
                           presets={"model": velocity_preset, "posterior_mean.model": SwinIRConfig.preset})
    flow_run = fit_flow(flow_cfg)
    restoration = _restore_held_out(out, val_dir, flow_run)
    report = evaluate_quickstart(out, val_dir / (Path(HELD_OUT).stem + ".png"), flow_run,
                                 dict(flow_cfg.data.degradation), console)

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
