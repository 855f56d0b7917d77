"""End-to-end restoration time per image: Latent-PMRF vs pixel-space PMRF (paper Table 4).

Both pipelines run f(y) (DifFace's SwinIR) -> source Z0 -> K Euler steps of an HDiT -> output,
the latent one with Sim-VAE c32 encode before and decode after. The two HDiTs have equal widths
and depths (hdit_latent_pmrf's 256/512/1024 × 2/4/6, NA/NA/global); they differ only where the
spaces force them to: 32 latent channels with patch 1 and conv patch embedding, or RGB with
PMRF's 4×4 patches. Random weights (time does not depend on them; the HDiTs' zero-initialised
layers drawn as in train_step.py, so the velocity is not 0). Times are medians over
``--reps`` after one warm-up, with a per-stage breakdown; ratio = latent / pixel.

Paper (A100, 512², K=25): latent 0.5745 s vs pixel 0.5247 s per image (1.09×). Target (project
issue): latent ≤ 0.5× pixel at 256², K = 25, peak memory printed for both. On CPU the default size
is 256²; on CUDA 512² with bf16 autocast.

Each space runs in its own subprocess (this script re-invoked with ``--worker``) so that peak
memories do not mix: on CUDA ``torch.cuda.max_memory_allocated``, on CPU the peak RSS
(``ru_maxrss``) minus the RSS after the imports (weights of f(y), HDiT and VAE + activations).
Roofline: FLOPs per image (f(y), encode, K velocity calls, decode) counted on the meta device,
achieved FLOP/s = FLOPs / total time, as a fraction of the ``torch.mm`` peak of the dtype measured
before and after the subprocesses (the larger is used; ``roofline.py``). ``--compile``: after the
eager runs, the same process ``compile_module``s the velocity net, the VAE and f(y) (as
``RestorationPipeline.compile_nets``), restores once to compile, then times; the restored image
equals the eager one with the same noise to max |compiled - eager| / max |eager| <= 1e-4 in fp32,
1e-2 in bf16. On CPU the compiled peak memory is not separable from the eager one's (n/a).

Measured on the 2-core CPU machine, otherwise idle (128², batch 1, K=25, fp32, median of 2):
latent 7.96 s (f(y) 0.26, encode 0.68, flow 5.97, decode 1.04) vs pixel 10.12 s (f(y) 0.18,
flow 9.94) per image: 0.79×. The latent HDiT sees 4× fewer tokens, but at batch 1 and these small
maps its time is far from proportional to tokens; the VAE costs 1.7 s. Not yet measured on a GPU
(none was lent); timings taken while other jobs ran varied by more than 3×.
At the target's 256² (2026-12-02, idle, K=25, fp32, median of 2): latent 10.66 s (f(y) 0.36,
encode+source 1.20, flow 7.28, decode 1.83; peak RSS 1268 MiB; 162 GFLOP/s, 81 % of the torch.mm
peak) vs pixel 25.78 s (f(y) 0.34, flow 25.44; 778 MiB; 136 GFLOP/s): latent / pixel = 0.41x
(target <= 0.5x: met). The latent HDiT sees 16× fewer tokens than PMRF's 4×4-patch one at 256².
Again after the decoder's resize convs became phase convs (models/vae_blocks.py): latent 10.35 s
(decode 1.62 s, was 1.83) vs pixel 25.43 s: 0.41x.
A 2048² restoration (issue 15, `--spaces latent --size 2048 --steps 1 --reps 1`; VAE encode and
decode tiled, 512² tiles with 192 px overlap, as `restore` runs it above 1 Mpx): peak RSS 4770 MiB
above the imports; 558 s per image at K = 1 (f(y) 45 s, encode 186 s, one Euler step 25 s, decode
302 s), so about 19 minutes at K = 25 on this CPU; memory does not grow with K.

    PYTHONPATH=. python benchmarks/restore_speed.py [--device cuda] [--size 512] [--steps 25] [--compile]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
from roofline import (DTYPES, achieved_cell, count_flops, matmul_peak, peak_line, peak_memory_meter, relative_diff,
                      sync_for)
from train_step import fill_zero_init

from latent_pmrf.flow import LatentSpace, PixelSpace, sample_euler, source_sample
from latent_pmrf.models.compile import compile_module
from latent_pmrf.models.hdit import HDiT, HDiTConfig
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

SOURCE_NOISE_STD = {"latent": 0.1, "pixel": 0.2}  # σ_s of each space's config
STAGES = ("posterior_mean", "encode+source", "flow", "decode", "total")
TARGET_RATIO = 0.5  # latent / pixel time
COMPILE_TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2}  # max |compiled - eager| / max |eager|


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
def restore_once(pm_net, velocity, space, lq, steps, sigma, sync, dtype) -> tuple[torch.Tensor, dict[str, float]]:
    """The restored image and the seconds of each stage."""
    bf16 = dtype != torch.float32
    with torch.autocast(lq.device.type, dtype) if bf16 else nullcontext():
        pm, t_pm = timed(lambda: pm_net(lq).clamp(-1, 1), sync)
        x0, t_enc = timed(lambda: source_sample(space, pm, sigma), sync)
        x1, t_flow = timed(lambda: sample_euler(velocity, x0, steps), sync)
        out, t_dec = timed(lambda: space.decode(x1), sync)
    return out, {"posterior_mean": t_pm, "encode+source": t_enc, "flow": t_flow, "decode": t_dec,
                 "total": t_pm + t_enc + t_flow + t_dec}


def restore_flops(space: str, size: int, steps: int) -> int:
    """FLOPs of one restoration, counted on the meta device."""
    pm_net = SwinIR(SwinIRConfig.preset("swinir_difface512")).to("meta")  # its init reads values: built on CPU
    with torch.device("meta"):
        velocity, space_mod = build(space, "meta")
        lq = torch.empty(1, 3, size, size)
    return count_flops(lambda: restore_once(pm_net, velocity, space_mod, lq, steps, SOURCE_NOISE_STD[space],
                                            lambda: None, torch.float32))


def worker(args: argparse.Namespace) -> dict:
    """Time one space (and, with --compile, its compiled nets) in this process; memory in MiB.
    The parent builds nothing before its workers have run (``roofline.peak_memory_meter``)."""
    space, device = args.worker, torch.device(args.device)
    cuda = device.type == "cuda"
    sync = sync_for(device)
    peak_mib = peak_memory_meter(device)

    torch.manual_seed(0)
    pm_net = SwinIR(SwinIRConfig.preset("swinir_difface512")).to(device).eval()
    lq = torch.rand(1, 3, args.size, args.size, device=device) * 2 - 1
    velocity, space_mod = build(space, device)
    fill_zero_init(velocity)
    dtype = DTYPES[args.dtype]

    def median_stages() -> tuple[torch.Tensor, dict[str, float]]:
        """One warm-up restoration, then --reps timed ones; all with the same noise."""
        runs = []
        for _ in range(args.reps + 1):
            torch.manual_seed(1)
            runs.append(restore_once(pm_net, velocity, space_mod, lq, args.steps, SOURCE_NOISE_STD[space], sync, dtype))
        return runs[0][0], {k: statistics.median(times[k] for _, times in runs[1:]) for k in STAGES}

    eager_out, eager = median_stages()
    result = {"hdit_params_m": sum(q.numel() for q in velocity.parameters()) / 1e6, "eager": eager,
              "eager_peak_mib": peak_mib()}
    if args.compile:
        for net in (velocity, pm_net, getattr(space_mod, "vae", None)):
            if net is not None:
                compile_module(net)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        compiled_out, result["compiled"] = median_stages()
        result["compiled_peak_mib"] = peak_mib() if cuda else None
        result["compiled_rel_diff"] = relative_diff(compiled_out, eager_out)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, help="default: 512 on CUDA, 256 on CPU")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--dtype", choices=("fp32", "bf16"), help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="also time the nets compiled (compile_module)")
    p.add_argument("--spaces", nargs="+", choices=list(SOURCE_NOISE_STD), default=list(SOURCE_NOISE_STD),
                   help="which pipelines to run (e.g. --spaces latent --size 2048 --steps 1 for the peak memory "
                        "of a 2048² restoration, whose VAE passes are tiled)")
    p.add_argument("--json")
    p.add_argument("--worker", choices=SOURCE_NOISE_STD, help=argparse.SUPPRESS)
    args = p.parse_args()
    cuda = torch.device(args.device).type == "cuda"
    args.size = args.size or (512 if cuda else 256)
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")

    if args.worker:
        print(json.dumps(worker(args)))
        return
    peak_start = matmul_peak(args.device, DTYPES[args.dtype], reps=args.reps)
    results = {}
    for space in args.spaces:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", space]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        results[space] = json.loads(out.splitlines()[-1])
    peak_end = matmul_peak(args.device, DTYPES[args.dtype], reps=args.reps)
    peak = max(peak_start, peak_end)
    modes = ("eager", "compiled") if args.compile else ("eager",)
    for space, r in results.items():  # after the workers: see the worker's docstring
        r["flops"] = restore_flops(space, args.size, args.steps)
        for mode in modes:
            r[f"{mode}_fraction_of_peak"] = r["flops"] / r[mode]["total"] / peak

    from rich.console import Console
    from rich.table import Table

    mem = "peak CUDA allocated memory" if cuda else "peak RSS minus RSS after imports"
    table = Table(title=f"{args.device}, {args.size}², batch 1, K={args.steps}, {args.dtype}, "
                        f"median of {args.reps} (seconds per image)",
                  caption=f"memory: {mem}; achieved: GFLOP / total time (% of the {args.dtype} torch.mm peak)")
    for col in ("space", "mode", "HDiT params (M)", *STAGES, "peak MiB", "GFLOP", "achieved"):
        table.add_column(col, justify="left" if col in ("space", "mode") else "right")
    for space, r in results.items():
        for mode in modes:
            memory = r[f"{mode}_peak_mib"]
            table.add_row(space, mode, f"{r['hdit_params_m']:.1f}", *(f"{r[mode][s]:.3f}" for s in STAGES),
                          "n/a" if memory is None else f"{memory:.0f}", f"{r['flops'] / 1e9:.0f}",
                          achieved_cell(r["flops"], r[mode]["total"], peak))
    both = {"latent", "pixel"} <= set(results)
    ratios = {mode: results["latent"][mode]["total"] / results["pixel"][mode]["total"] for mode in modes} if both else {}
    console = Console(width=max(Console().width, 150))
    console.print(table)
    console.print(peak_line(peak_start, peak_end, args.device, args.dtype))
    for mode, ratio in ratios.items():
        console.print(f"{mode}: latent / pixel = {ratio:.2f}x (paper, A100 512²: 1.09x; target at 256² <= "
                      f"{TARGET_RATIO}x): " + ("[green]met[/green]" if ratio <= TARGET_RATIO else "[red]NOT met[/red]"))
    if args.compile:
        tolerance = COMPILE_TOLERANCE[args.dtype]
        for space, r in results.items():
            r["compiled_equal"] = r["compiled_rel_diff"] <= tolerance
            console.print(f"{space}: compiled {r['eager']['total'] / r['compiled']['total']:.2f}x eager speed; "
                          f"restored image |compiled - eager| / |eager| {r['compiled_rel_diff']:.1e} "
                          f"(tolerance {tolerance:g}): "
                          + ("[green]equal[/green]" if r["compiled_equal"] else "[red]NOT equal[/red]"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {k: v for k, v in vars(args).items() if k not in ("json", "worker")},
                       "matmul_peak_flops_per_s": {"start": peak_start, "end": peak_end, "used": peak},
                       "results": results, "latent_over_pixel": ratios}, f, indent=2)


if __name__ == "__main__":
    main()
