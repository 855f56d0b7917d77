"""``latent-pmrf`` command line: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

console = Console(stderr=True)


def _train(args: argparse.Namespace) -> None:
    from ..config import load_config
    from ..lightning.restoration_config import FlowTrainConfig, PosteriorMeanTrainConfig
    from ..lightning.train_restoration import fit_flow, fit_posterior_mean
    from ..lightning.train_vae import fit_vae
    from ..lightning.vae_config import VAETrainConfig
    from ..models.hdit import HDiTConfig
    from ..models.sim_vae import SimVAEConfig
    from ..models.swinir import SwinIRConfig

    tasks = {
        "vae": (VAETrainConfig, SimVAEConfig.preset, fit_vae),
        "posterior_mean": (PosteriorMeanTrainConfig, SwinIRConfig.preset, fit_posterior_mean),
        "flow": (FlowTrainConfig, {"model": HDiTConfig.preset, "posterior_mean.model": SwinIRConfig.preset},
                 fit_flow),
    }
    from omegaconf import OmegaConf

    task = OmegaConf.load(args.config).get("task", "vae")
    if task not in tasks:
        raise SystemExit(f"{args.config}: task {task!r} is not one of {sorted(tasks)}")
    schema, presets, fit = tasks[task]
    cfg = load_config(schema, args.config, args.overrides, presets=presets)
    out = fit(cfg)
    console.print(f"[green]done[/green]: run directory {out}")


def _export_vae(args: argparse.Namespace) -> None:
    from ..lightning.export import export_vae

    out, used_ema = export_vae(args.ckpt, args.out_dir)
    console.print(f"wrote {'EMA' if used_ema else 'live (no EMA in checkpoint)'} Sim-VAE weights to {out}")


def _latent_stats(args: argparse.Namespace) -> None:
    from ..models.latent_stats import estimate_latent_stats

    stats = estimate_latent_stats(args.vae, args.images, limit=args.limit, crop_size=args.crop_size,
                                  batch_size=args.batch_size, device=args.device, write=args.write)
    console.print_json(data=stats)


def _quickstart(args: argparse.Namespace) -> None:
    from .quickstart import run_quickstart

    run_quickstart(args.out, max_steps=args.steps, restoration_steps=args.restoration_steps)


def _degrade_preview(args: argparse.Namespace) -> None:
    from .degrade_preview import degrade_preview

    out = degrade_preview(args.image, args.out, preset=args.preset, n=args.n, seed=args.seed, size=args.size,
                          config=args.config)
    console.print(f"wrote {args.n} degradations of {args.image} to {out}")


def _restore(args: argparse.Namespace) -> None:
    from .restore import restore

    summary = restore(args.ckpt, args.input, args.output, steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                      device=args.device, save_posterior_mean=args.save_posterior_mean, console=console)
    if summary.failed and not summary.written:
        sys.exit(1)


def _plot_convergence(args: argparse.Namespace) -> None:
    from ..analysis.convergence import plot_convergence

    result = plot_convergence(args.runs, args.metric, args.out, labels=args.labels,
                              lower_is_better=not args.higher_is_better)
    console.print_json(data=result)
    console.print(f"wrote {args.out}")


def _plot_pd(args: argparse.Namespace) -> None:
    from ..analysis.pareto import plot_pd

    front = plot_pd(args.results, args.x, args.y, args.out, label=args.label)
    console.print(f"Pareto front: {', '.join(front)}\nwrote {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latent-pmrf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config (resumes from last.ckpt)")
    p.add_argument("config", help="YAML file under configs/")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. trainer.max_steps=1000 data.batch_size=4")
    p.set_defaults(func=_train)

    p = sub.add_parser("export-vae", help="write a VAE training checkpoint's EMA weights in the official format")
    p.add_argument("ckpt")
    p.add_argument("out_dir")
    p.set_defaults(func=_export_vae)

    p = sub.add_parser("vae-latent-stats", help="estimate a VAE's latent shift_factor / scaling_factor from images")
    p.add_argument("--vae", required=True, help="Sim-VAE snapshot directory (config.json + safetensors)")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--write", action="store_true", help="store the factors in the snapshot's config.json")
    p.set_defaults(func=_latent_stats)

    p = sub.add_parser("quickstart", help="Sim-VAE, posterior mean and Latent-PMRF on scikit-image's photos (CPU)")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--restoration-steps", type=int, default=300,
                   help="training steps of the posterior-mean model and of the flow each")
    p.add_argument("--steps", type=int, default=600, help="Sim-VAE training steps")
    p.set_defaults(func=_quickstart)

    p = sub.add_parser("degrade-preview", help="a grid of synthetic LQ samples of one HQ image, with their parameters")
    p.add_argument("--image", required=True, help="HQ image file")
    p.add_argument("--out", required=True, help="PNG file to write")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", default="difface", help="degradation preset (difface, gfpgan)")
    which.add_argument("--config", help="YAML file of DegradationConfig fields (optionally with preset:)")
    p.add_argument("--n", type=int, default=16, help="number of samples (grid of ceil(sqrt(n)) columns after the GT)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses SeedSequence([seed, i])")
    p.add_argument("--size", type=int, help="centre-crop and resize to size x size (default: keep if <= 512, else 512)")
    p.set_defaults(func=_degrade_preview)

    p = sub.add_parser("restore", help="restore a face image or a folder with a trained (latent) PMRF checkpoint")
    p.add_argument("--ckpt", required=True, help="flow training checkpoint (.ckpt; EMA weights are used)")
    p.add_argument("--input", required=True, help="image file or folder (searched recursively)")
    p.add_argument("--output", required=True, help="writes OUTPUT/restored/ (and OUTPUT/posterior_mean/)")
    p.add_argument("--steps", type=int, default=25, help="Euler steps (paper: 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--save-posterior-mean", action="store_true", help="also write f(y), needed for IndRMSE")
    p.set_defaults(func=_restore)

    p = sub.add_parser("plot-convergence", help="metric vs training step for runs, with the speed-up over the first")
    p.add_argument("runs", nargs="+", help="run directories (csv/version_*/metrics.csv) or CSV files; first = baseline")
    p.add_argument("--metric", required=True, help="logged column, e.g. val/fid")
    p.add_argument("--out", required=True)
    p.add_argument("--labels", nargs="+", help="one per run (default: folder names)")
    p.add_argument("--higher-is-better", action="store_true", help="for PSNR-like metrics")
    p.set_defaults(func=_plot_convergence)

    p = sub.add_parser("plot-pd", help="perception-distortion plane with the Pareto front from a results CSV")
    p.add_argument("results", help="CSV with one row per method / checkpoint / step count")
    p.add_argument("--x", default="psnr", help="distortion column (psnr, ind_rmse, ...)")
    p.add_argument("--y", default="fid", help="perception column (fid, ...)")
    p.add_argument("--label", default="method", help="column naming each point")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_plot_pd)
    return parser


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> None:
    from ..data.image_io import ImageReadError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, ImageReadError) as err:
        console.print(f"[red]error:[/red] {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
