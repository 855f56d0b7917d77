"""End-to-end restoration time per image: Latent-PMRF vs pixel-space PMRF (paper Table 4).

Both pipelines run f(y) (DifFace's SwinIR) -> source Z0 -> K Euler steps of an HDiT -> output,
the latent one with Sim-VAE c32 encode before and decode after. The two HDiTs have equal widths
and depths (hdit_latent_pmrf's 256/512/1024 × 2/4/6, NA/NA/global); they differ only where the
spaces force them to: 32 latent channels with patch 1 and conv patch embedding, or RGB with
PMRF's 4×4 patches. Random weights (time does not depend on them). Times are medians over
``--reps`` after one warm-up, with a per-stage breakdown; ratio = latent / pixel.

Paper (A100, 512², K=25): latent 0.5745 s vs pixel 0.5247 s per image (1.09×). Target of this
repository: latent ≤ 1.0× pixel. On CPU the default size is 128² (512² takes minutes per image
here); on CUDA 512² with bf16 autocast.

Measured on the 2-core CPU machine, otherwise idle (128², batch 1, K=25, fp32, median of 2):
latent 7.96 s (f(y) 0.26, encode 0.68, flow 5.97, decode 1.04) vs pixel 10.12 s (f(y) 0.18,
flow 9.94) per image: 0.79×. The latent HDiT sees 4× fewer tokens, but at batch 1 and these small
maps its time is far from proportional to tokens; the VAE costs 1.7 s. Not yet measured on a GPU
(none was lent); timings taken while other jobs ran varied by more than 3×.

    PYTHONPATH=. python benchmarks/restore_speed.py [--device cuda] [--size 512] [--steps 25] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from latent_pmrf.flow import LatentSpace, PixelSpace, sample_euler, source_sample
from latent_pmrf.models.hdit import HDiT, HDiTConfig
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
from latent_pmrf.models.swinir import SwinIR, SwinIRConfig


def build(space: str, device: str):
    levels = HDiTConfig.preset("hdit_latent_pmrf").levels
    if space == "latent":
        cfg = HDiTConfig.preset("hdit_latent_pmrf")
        space_mod = LatentSpace(SimVAE(SimVAEConfig.preset("sim_vae_c32")), sample_posterior=True)
    else:
        cfg = dataclasses.replace(HDiTConfig.preset("hdit_pmrf"), levels=levels)
        space_mod = PixelSpace()
    return HDiT(cfg).to(device).eval(), space_mod.to(device).eval()


def timed(fn, sync):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


@torch.no_grad()
def restore_once(pm_net, velocity, space, lq, steps, sigma, sync, dtype):
    with torch.autocast(lq.device.type, dtype, enabled=dtype != torch.float32):
        pm, t_pm = timed(lambda: pm_net(lq).clamp(-1, 1), sync)
        x0, t_enc = timed(lambda: source_sample(space, pm, sigma), sync)
        x1, t_flow = timed(lambda: sample_euler(velocity, x0, steps), sync)
        _, t_dec = timed(lambda: space.decode(x1), sync)
    return {"posterior_mean": t_pm, "encode+source": t_enc, "flow": t_flow, "decode": t_dec,
            "total": t_pm + t_enc + t_flow + t_dec}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, help="default: 512 on CUDA, 128 on CPU")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--dtype", choices=("fp32", "bf16"), help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--json")
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    size = args.size or (512 if cuda else 128)
    dtype = torch.bfloat16 if (args.dtype or ("bf16" if cuda else "fp32")) == "bf16" else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    pm_net = SwinIR(SwinIRConfig.preset("swinir_difface512")).to(args.device).eval()
    lq = torch.rand(1, 3, size, size, device=args.device) * 2 - 1
    results = {}
    for space, sigma in (("latent", 0.1), ("pixel", 0.2)):
        velocity, space_mod = build(space, args.device)
        restore_once(pm_net, velocity, space_mod, lq, args.steps, sigma, sync, dtype)  # warm-up
        runs = [restore_once(pm_net, velocity, space_mod, lq, args.steps, sigma, sync, dtype) for _ in range(args.reps)]
        results[space] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[space]["hdit_params_m"] = sum(q.numel() for q in velocity.parameters()) / 1e6
        del velocity, space_mod

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.device}, {size}², batch 1, K={args.steps}, {str(dtype).split('.')[-1]}, "
                        f"median of {args.reps} (seconds per image)")
    stages = ["posterior_mean", "encode+source", "flow", "decode", "total"]
    for col in ("space", "HDiT params (M)", *stages):
        table.add_column(col, justify="left" if col == "space" else "right")
    for space, r in results.items():
        table.add_row(space, f"{r['hdit_params_m']:.1f}", *(f"{r[s]:.3f}" for s in stages))
    ratio = results["latent"]["total"] / results["pixel"]["total"]
    console = Console()
    console.print(table)
    console.print(f"latent / pixel = {ratio:.2f}x (paper, A100 512²: 1.09x; target <= 1.0x): "
                  + ("[green]met[/green]" if ratio <= 1.0 else "[red]NOT met[/red]"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {"device": args.device, "size": size, "steps": args.steps, "dtype": str(dtype)},
                       "results": results, "latent_over_pixel": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
