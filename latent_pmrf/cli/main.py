"""``latent-pmrf`` command line: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

console = Console(stderr=True)


def _train(args: argparse.Namespace) -> None:
    from ..config import load_config
    from ..lightning.train_vae import fit_vae
    from ..lightning.vae_config import VAETrainConfig
    from ..models.sim_vae import SimVAEConfig

    tasks = {"vae": (VAETrainConfig, SimVAEConfig.preset, fit_vae)}
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

    run_quickstart(args.out, max_steps=args.steps)


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

    p = sub.add_parser("quickstart", help="train a small Sim-VAE on scikit-image's photos (CPU, minutes)")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--steps", type=int, default=600)
    p.set_defaults(func=_quickstart)
    return parser


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
