"""Cost and quality of early-branching selection (GenSIRR's DEBS) for k = 1, 4, 8, 16 draws.

Each row restores the same images with ``RestorationPipeline.restore_early_branching`` (k draws, m
Euler steps together, the best one-step end point by ``--scorer`` goes on for K - m steps) and
reports: velocity evaluations in B-image units (the batched call on k·B images counts k; the
formula is k·m + K - m) and the ratio that count predicts, decodes and scores of the end points
(each run also decodes its output once), wall time per batch (median of ``--reps`` after a
warm-up) and its ratio to plain ``restore`` measured in the same run, the chosen end point's score,
the output's score, and PSNR against ``--reference`` when given. All rows share the per-image
generators, so the draws of k = 4 are the first four of k = 16: the chosen score cannot fall as k
grows, and k = 1 restores exactly what plain ``restore`` does.

GenSIRR (FLUX.1 Kontext, 256²): 1.25× at k = 4 and 1.92× at k = 16 (2061.9 -> 3952.4 ms). Its
velocity net is 12B parameters, so its decodes and depth scores are cheap beside one step; with
this repository's nets a decode costs several velocity steps and the ratio is larger than the
count predicts (the ``decodes`` column says how many).

By default small random nets (a latent pipeline: Sim-VAE, SwinIR, HDiT), timing the sampler's
structure rather than a trained model; ``--ckpt`` restores with a real one (any ``restore --ckpt``).
Not yet measured: only a smoke run on a busy 2-core CPU, whose times mean nothing.

    PYTHONPATH=. python benchmarks/debs_cost.py [--ckpt X] [--device cuda] [--dtype bf16] [--size 256] \\
        [--scorer depth] [--input lq.png --reference gt.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from latent_pmrf.flow import RestorationPipeline, load_restoration
from latent_pmrf.flow.scorers import SCORERS, build_scorer
from latent_pmrf.metrics import psnr
from latent_pmrf.seeding import torch_generator


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def small_random_pipeline() -> RestorationPipeline:
    """Sim-VAE f4c8, a 2-level HDiT (neighbourhood + global attention) and a 2-block SwinIR, random weights."""
    from latent_pmrf.models.hdit import HDiT, HDiTConfig
    from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
    from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

    torch.manual_seed(0)
    vae = SimVAE(SimVAEConfig(block_out_channels=[32, 64, 64], layers_per_block=1, layers_mid_block=1,
                              latent_channels=8))
    levels = [dict(depth=2, width=128, d_head=32, kernel_size=7), dict(depth=2, width=256, d_head=32, attention="global")]
    velocity = HDiT(HDiTConfig(in_channels=8, out_channels=8, patch_size=1, mapping_width=128, levels=levels))
    for weight in velocity.parameters():  # HDiT's zero-initialised projections, random too: v != 0
        if not weight.any():
            torch.nn.init.normal_(weight, std=0.02)
    posterior_mean = SwinIR(SwinIRConfig(embed_dim=24, depths=[2], num_heads=[2], window_size=4, scale=4,
                                         img_size=16, upsample_channels=16))
    return RestorationPipeline(posterior_mean, velocity, vae, source_noise_std=0.1)


def load_image(path: str, size: int, device: str) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: the file, resized (bicubic, antialiased)."""
    from latent_pmrf.data.image_io import read_image

    image = torch.from_numpy(read_image(path)).permute(2, 0, 1)[None]  # (H, W, 3) -> (1, 3, H, W)
    image = F.interpolate(image, (size, size), mode="bicubic", antialias=True).clamp(0, 1)
    return image.to(device) * 2 - 1


class Recorder:
    """The scorer, keeping what it returned (one (B,) tensor per call)."""

    def __init__(self, scorer):
        self.scorer, self.calls = scorer, []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(self.scorer(images).float().cpu())
        return self.calls[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", help="flow checkpoint / pipeline folder (default: small random nets)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="velocity net precision (default: bf16 on CUDA, else fp32)")
    p.add_argument("--size", type=int, help="image side (default: 256 on CUDA, 64 on CPU)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=25, help="K")
    p.add_argument("--branch-steps", type=int, default=1, help="m")
    p.add_argument("--ks", default="1,4,8,16", help="numbers of draws, comma-separated")
    p.add_argument("--scorer", default="sharpness", choices=tuple(SCORERS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input", help="LQ image (default: random); resized to --size, repeated --batch times")
    p.add_argument("--reference", help="its ground truth, for PSNR")
    p.add_argument("--json")
    args = p.parse_args()
    on_gpu = args.device.startswith("cuda")
    dtype = DTYPES[args.dtype or ("bf16" if on_gpu else "fp32")]
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    ks = [int(k) for k in args.ks.split(",")]
    size = args.size or (256 if on_gpu else 64)

    pipeline = (load_restoration(args.ckpt) if args.ckpt else small_random_pipeline()).to(args.device).eval()
    side = -(-size // pipeline.size_multiple) * pipeline.size_multiple
    lq = (load_image(args.input, side, args.device).expand(args.batch, -1, -1, -1) if args.input else
          torch.rand(args.batch, 3, side, side, generator=torch.Generator().manual_seed(args.seed)).to(args.device) * 2 - 1)
    reference = load_image(args.reference, side, args.device).expand(args.batch, -1, -1, -1) if args.reference else None
    scorer = build_scorer(args.scorer, args.device)
    items = []
    pipeline.velocity.register_forward_hook(lambda module, inputs, output: items.append(inputs[0].shape[0]))

    def run(k: int | None) -> dict:
        """One timed restoration: plain ``restore`` (k None) or early branching with k draws."""
        generators = [torch_generator(args.seed, i, device=args.device) for i in range(args.batch)]
        recorder = Recorder(scorer)
        items.clear()
        sync()
        start = time.perf_counter()
        with torch.autocast(torch.device(args.device).type, dtype, enabled=dtype != torch.float32):
            if k is None:
                out, _ = pipeline.restore(lq, args.steps, generator=generators)
                chosen = None
            else:
                out, _, chosen = pipeline.restore_early_branching(lq, recorder, k, args.steps, args.branch_steps,
                                                                  generator=generators)
        sync()
        seconds = time.perf_counter() - start
        images = (out.float().clamp(-1, 1) + 1) / 2
        return {"seconds": seconds, "velocity_evaluations": sum(items) / args.batch, "velocity_calls": len(items),
                "scored_decodes": len(recorder.calls),
                "chosen_score": (torch.stack(recorder.calls)[chosen.cpu(), torch.arange(args.batch)].mean().item()
                                 if chosen is not None else None),
                "output_score": scorer(images).float().mean().item(),
                "psnr": psnr(images, (reference + 1) / 2).mean().item() if reference is not None else None}

    results = {}
    for k in [None, *ks]:
        run(k)  # warm-up
        runs = [run(k) for _ in range(args.reps)]
        results["plain" if k is None else k] = {**runs[0], "seconds": statistics.median(r["seconds"] for r in runs)}

    from rich.console import Console
    from rich.table import Table

    base = results["plain"]
    table = Table(title=f"early branching: {'random nets' if not args.ckpt else args.ckpt}, {args.device}, {side}², "
                        f"batch {args.batch}, K={args.steps}, m={args.branch_steps}, scorer {args.scorer}, "
                        f"{str(dtype).split('.')[-1]}, median of {args.reps}")
    for col in ("k", "velocity evals", "predicted ×", "calls", "scored decodes", "seconds", "× plain",
                "chosen score", "output score", "PSNR"):
        table.add_column(col, justify="right")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for k, r in results.items():
        table.add_row(str(k), f"{r['velocity_evaluations']:g}", f"{r['velocity_evaluations'] / args.steps:.2f}",
                      str(r["velocity_calls"]), str(r["scored_decodes"]), f"{r['seconds']:.3f}",
                      f"{r['seconds'] / base['seconds']:.2f}", fmt(r["chosen_score"], ".4g"),
                      fmt(r["output_score"], ".4g"), fmt(r["psnr"], ".2f"))
    console = Console(width=170)
    console.print(table)
    console.print("GenSIRR (FLUX.1 Kontext, 256²): 1.25× at k = 4, 1.92× at k = 16")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {**vars(args), "size": side, "dtype": str(dtype)},
                       "results": {str(k): r for k, r in results.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
