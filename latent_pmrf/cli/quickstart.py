"""The README's quickstart, end to end on CPU on scikit-image's photos: a small Sim-VAE, then a
tiny posterior-mean SwinIR and a tiny Latent-PMRF in that VAE's latent space, then the
restoration of a degraded held-out photo.

Writes, under ``--out``: ``vae/``, ``posterior_mean/``, ``latent_pmrf/`` (the Lightning runs),
``vae_export/`` (EMA weights in the official format), ``reconstruction.png`` (held-out photo |
reconstruction), ``restoration.png`` (LQ | posterior mean | Latent-PMRF | GT), ``loss_curve.png``,
``eval/results.{csv,md,json}`` (the evaluation table of its restorations, see
``quickstart_report.py``), ``convergence.png``, ``pd.png`` and ``metrics.json`` (with the seconds
each stage took, also printed at the end).

The flow runs in a normalised latent: after the VAE is trained, ``vae-latent-stats`` measures its
latent's mean and standard deviation on the training photos and stores shift = mean and scale =
1/std in ``vae_export/config.json``, so the flow sees z' = (z - shift)·scale with unit spread and
σ_s = 0.1 is a tenth of it (the quickstart VAE's raw spread is far from Sim-VAE c32's; see the
README's "Latent normalisation").
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
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
from ..flow.latent_stats import estimate_latent_stats
from ..lightning.checkpoints import ConfigDriftError
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
VAL_CROP = 256  # validation (and convergence) images: the four corner crops of the held-out photo
FLOW_VAL_EVERY = 50  # steps between the flow's validations: the points of convergence.png
# Training steps, chosen on the 2-core CPU once the photos were decoded only once (data.cache_images,
# which made a Sim-VAE step 1.6x and a posterior-mean step ~2.5x faster): the held-out
# reconstruction goes from 23.66 dB (600 VAE steps) to 24.43 (900) and 25.1-25.3 (1200); f(y)'s gain over the LQ
# grows from +0.48 dB (300 steps) to +0.79 dB (1200) and then flattens (+0.83 at 2400; mean over 8
# degradations of the held-out photo); the flow's held-out loss did not fall below a zero
# velocity's in up to 1350 steps, so it keeps 300.
VAE_STEPS, PM_STEPS, FLOW_STEPS = 1200, 1200, 300

console = Console(stderr=True)


def _skimage_photo_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def held_out_photo() -> Path:
    return _skimage_photo_dir() / HELD_OUT


def stage_photos(data_dir: Path) -> tuple[Path, Path]:
    """data/train: the training photos as PNGs; data/val: the held-out photo's four corner crops,
    so that validation and the convergence curve have a set (FID needs two images or more)."""
    src = _skimage_photo_dir()
    train, val = data_dir / "train", data_dir / "val"
    for folder in (train, val):
        folder.mkdir(parents=True, exist_ok=True)
    for name in [*TRAIN_PHOTOS, HELD_OUT]:
        if not (src / name).is_file():
            raise FileNotFoundError(f"scikit-image photo {src / name} is missing; reinstall scikit-image")
    for name in TRAIN_PHOTOS:
        target = train / (Path(name).stem + ".png")
        if not target.exists():
            Image.fromarray(to_uint8(read_image(src / name), (0, 1))).save(target)
    image = read_image(src / HELD_OUT)
    h, w = image.shape[:2]
    for i, (y, x) in enumerate((y, x) for y in (0, h - VAL_CROP) for x in (0, w - VAL_CROP)):
        target = val / f"{Path(HELD_OUT).stem}_{i}.png"
        if not target.exists():
            Image.fromarray(to_uint8(image[y:y + VAL_CROP, x:x + VAL_CROP], (0, 1))).save(target)
    return train, val


class StageClock:
    """Wall-clock seconds of each stage of the run, printed at its end."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        console.rule(f"[bold]{name}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 1)

    def table(self) -> str:
        width = max(map(len, self.seconds))
        total = sum(self.seconds.values())
        lines = [f"{name:<{width}}  {sec:7.1f} s  {100 * sec / total:5.1f} %" for name, sec in self.seconds.items()]
        return "\n".join(["stage times", *lines, f"{'total':<{width}}  {total:7.1f} s"])


def plot_logged(run_dir: Path, key: str, out_png: Path, ylabel: str, title: str,
                reference: str | None = None) -> list[tuple[int, float]]:
    """``key`` of a run's CSV log against step (log scale), with the logged ``reference`` (e.g. the
    loss of a zero velocity) dashed; returns the (step, value) pairs of ``key``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = read_logged_metrics(run_dir)
    rows = [row for row in logged if row.get(key)]
    if not rows:
        raise ValueError(f"{run_dir}/csv has no {key} values to plot")
    points = [(int(r["step"]), float(r[key])) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points), marker="o" if len(points) < 20 else None, label=key)
    reference_rows = [row for row in logged if row.get(reference)] if reference else []
    if reference_rows:
        ax.plot([int(r["step"]) for r in reference_rows], [float(r[reference]) for r in reference_rows], "--",
                color="gray", label=reference)
        ax.legend()
    ax.set(xlabel="step", ylabel=ylabel, yscale="log", title=title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return points


def _restore_held_out(out: Path, flow_run: Path, degradation, steps: int = 25) -> dict:
    """Degrade the held-out photo (fixed seed), restore it, save LQ | f(y) | restored | GT."""
    from ..data.degradations import BFRDegradation
    from ..flow import RestorationPipeline

    pipeline = RestorationPipeline.from_checkpoint(last_checkpoint(flow_run))  # EMA weights, frozen nets included
    deg = BFRDegradation(replace(degradation, hflip_prob=0.0, gray_prob=0.0))
    image = read_image(held_out_photo())
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


# What a quickstart run writes into --out: all of it is removed by --fresh, nothing else is.
OUTPUTS = ("data", "vae", "vae_export", "posterior_mean", "latent_pmrf", "eval", "reconstruction.png",
           "restoration.png", "loss_curve.png", "convergence.png", "pd.png", "metrics.json")


def clear_outputs(out: Path) -> list[Path]:
    """--fresh: delete the quickstart's own outputs in ``out`` (``OUTPUTS``); returns what was removed."""
    import shutil

    removed = [out / name for name in OUTPUTS if (out / name).exists()]
    for path in removed:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed


def run_quickstart(out: str | Path, max_steps: int = VAE_STEPS, pm_steps: int = PM_STEPS, flow_steps: int = FLOW_STEPS,
                   fresh: bool = False) -> dict:
    """Re-running into the same ``out`` continues its runs (a finished stage is not trained again);
    one made with other settings (e.g. before a ``git pull``) stops the run, naming it, unless
    ``fresh`` removes the earlier outputs first."""
    out = Path(out)
    if fresh:
        removed = clear_outputs(out)
        if removed:
            console.print(f"--fresh: removed {len(removed)} earlier output(s) from {out}")
    try:
        return _run(out, max_steps, pm_steps, flow_steps)
    except ConfigDriftError as err:
        raise ConfigDriftError(f"{out} holds a quickstart run made with other settings: {err}. Start over with "
                               f"`latent-pmrf quickstart --fresh` (make quickstart QUICKSTART_ARGS=--fresh), or keep it "
                               f"and pass --out NEW_DIR") from err


def _run(out: Path, max_steps: int, pm_steps: int, flow_steps: int) -> dict:
    start = time.time()
    clock = StageClock()
    with clock("photos"):
        train_dir, val_dir = stage_photos(out / "data")
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

    with clock("Sim-VAE training"):
        vae_task, cfg = load_task_config(CONFIG, overrides)
        # the cosine decay ends with the run, however many steps it is given
        cosine_steps = max(1, max_steps - cfg.optim.warmup_steps)
        if cfg.optim.cosine_steps != cosine_steps:
            vae_task, cfg = load_task_config(CONFIG, [*overrides, f"optim.cosine_steps={cosine_steps}"])
        run_dir = train(vae_task, cfg, val_lpips=use_lpips)
    with clock("VAE export, latent statistics, held-out reconstruction"):
        export_dir, used_ema = export_vae(last_checkpoint(run_dir), out / "vae_export")
        # The flow's latent: shift = mean, scale = 1/std of this VAE's latents on the training photos.
        latent = estimate_latent_stats(export_dir, train_dir, limit=None, crop_size=VAL_CROP, write=True)
        console.print(f"latent normalisation (stored in {export_dir / 'config.json'}): z' = (z - {latent['shift_factor']:.4f})"
                      f" x {latent['scaling_factor']:.4f}, measured on {latent['num_images']} training photos; the "
                      f"raw latent's std is {1 / latent['scaling_factor']:.3f}, so sigma_s = 0.1 is 0.1 of the latent's spread")
        vae = SimVAE.from_pretrained(export_dir).eval()  # the exported (EMA) weights, read back from disk
        held_out_psnr = _reconstruct_held_out(vae, out / "reconstruction.png")
        plot_logged(run_dir, "train/total", out / "loss_curve.png", "training loss", "Sim-VAE quickstart")

    # Posterior mean, then the latent flow on top of the exported VAE and that posterior mean.
    data = [f"data.train=[{{root: {train_dir}}}]", f"data.val_dir={val_dir}", "trainer.progress_bar=true"]
    with clock("posterior-mean training"):
        pm_task, pm_cfg = load_task_config(CONFIGS / "posterior_mean" / "quickstart.yaml",
                                           [*data, f"trainer.output_dir={out / 'posterior_mean'}",
                                            f"trainer.max_steps={pm_steps}", f"trainer.val_every_n_steps={pm_steps}"])
        pm_run = train(pm_task, pm_cfg)
    with clock("Latent-PMRF training"):
        flow_task, flow_cfg = load_task_config(CONFIGS / "latent_pmrf" / "quickstart.yaml",
                                               [*data, f"trainer.output_dir={out / 'latent_pmrf'}", f"vae={export_dir}",
                                                f"posterior_mean.checkpoint={last_checkpoint(pm_run)}",
                                                f"trainer.max_steps={flow_steps}",
                                                f"trainer.val_every_n_steps={min(FLOW_VAL_EVERY, flow_steps)}"])
        flow_run = train(flow_task, flow_cfg)
    with clock("held-out restoration"):
        restoration = _restore_held_out(out, flow_run, flow_cfg.data.degradation)
    with clock("evaluation and plots"):
        report = evaluate_quickstart(out, held_out_photo(), flow_run, flow_cfg.data.degradation, console)
        # The flow's training objective (Eq. 3) on the held-out crops: the curve that shows it learning.
        curve = plot_logged(flow_run, "val/flow_loss", out / "convergence.png", "flow-matching loss, held out",
                            "Latent-PMRF quickstart: Eq. 3 on the validation crops",
                            reference="val/flow_loss_zero_velocity")
        report["convergence"] = {"metric": "val/flow_loss", "points": curve}

    metrics = {
        "held_out_image": HELD_OUT,
        "held_out_psnr_db": held_out_psnr,
        "steps": cfg.trainer.max_steps,
        "train_images": len(TRAIN_PHOTOS),
        "vae_parameters": sum(p.numel() for p in vae.parameters()),
        "ema_weights": used_ema,
        "latent_normalisation": latent,
        "restoration": {**restoration, "posterior_mean_steps": pm_steps, "flow_steps": flow_steps},
        "evaluation": {k: v for k, v in report.items() if k != "table_markdown"},
        "seconds": round(time.time() - start, 1),
        "stage_seconds": clock.seconds,
        "skipped": skipped,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    console.print_json(data=metrics)
    console.print(report["table_markdown"])
    for name in ("reconstruction.png", "restoration.png", "loss_curve.png", "convergence.png", "pd.png",
                 "eval/results.csv", "metrics.json", "vae_export"):
        console.print(f"wrote {out / name}")
    console.print(clock.table())
    return metrics


def _reconstruct_held_out(vae: SimVAE, out_png: Path) -> float:
    """PSNR of the exported (EMA) VAE's reconstruction of the held-out photo, read back from disk;
    saves photo | reconstruction."""
    image = read_image(held_out_photo())
    f = vae.config.downsample_factor
    h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    x = to_tensor(image[:h, :w])[None]
    with torch.no_grad():
        recon = vae.decode(vae.encode(x).mode()).clamp(-1, 1)
    pred, gt = (recon[0] + 1) / 2, (x[0] + 1) / 2
    side_by_side = torch.cat([gt, pred], dim=2).permute(1, 2, 0).numpy()
    Image.fromarray(to_uint8(side_by_side, (0, 1))).save(out_png)
    return float(psnr(pred[None], gt[None])[0])  # RGB, 8-bit grid, as the paper's evaluation
