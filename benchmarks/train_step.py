"""Training-step speed as a fraction of the machine's matmul peak, with the compile and
activation-checkpointing switches (project issue 16).

A step is what a trainer does per batch: ``zero_grad``, forward, loss, ``backward``, AdamW step,
on random weights and inputs, for

* ``sim_vae``:   Sim-VAE c32 (the official preset) on (B, 3, S, S) images in [-1, 1]: encode,
  z ~ q(z|x), decode; loss L1 + 1e-6·KL, i.e. VAEModule's loss without the VGG term; AdamW with
  VAEOptimConfig's lr, betas and weight decay;
* ``hdit``:      the latent velocity net ``hdit_latent_pmrf`` on (B, 32, S/8, S/8) latents (Sim-VAE
  c32's), rectified-flow loss ``flow_matching_loss`` (Eq. 3) with x0, x1 ~ N(0, I) and stratified
  t; AdamW with RestorationOptimConfig's settings. Only the velocity net: the frozen f(y) and VAE
  encode that ``flow_endpoints`` adds per step are restore_speed.py's;
* ``looformer``: the official release's LooUFormer ``latent_pmrf_official`` (151 M), likewise; off
  by default on CPU.

Zero-initialised parameters (the velocity nets' output projections and AdaRMSNorm, norm biases)
get N(0, 0.02²) so that every layer passes a signal. At sizes whose latent maps are smaller than
the 7×7 neighbourhood the NA kernels are clamped to the map (printed); at the default 256² they
are the presets'.

Time: median seconds per step over ``--reps`` after ``--warmup`` steps, synchronised on CUDA. FLOPs
per step: ``roofline.count_flops`` of forward + loss + backward on the meta device (matmuls,
convolutions, attention; with activation checkpointing the recomputed forward counts too;
neighbourhood attention as the PyTorch fallback's tiles with their halo keys, which is what runs on
CPU, while NATTEN's kernels on CUDA do fewer).
Achieved FLOP/s = FLOPs / time, as a fraction of the ``--dtype`` ``torch.mm`` peak measured at the
start and at the end of this run (the larger is used). Targets (project issue, CPU, fp32): Sim-VAE
step >= 60 % of the matmul peak, HDiT step >= 40 %.

Each task and checkpointing variant runs in its own subprocess (this script re-invoked with
``--worker``), so peak memories do not mix: on CUDA ``torch.cuda.max_memory_allocated``, on CPU the
peak RSS (``ru_maxrss``) minus the RSS after the imports. ``--activation-checkpointing`` runs the
velocity nets with and without it (Sim-VAE has no such switch). ``--compile`` then, in the same
subprocess, ``compile_module``s a copy with the same weights, checks that one loss and output on
the same inputs and noise equal the eager ones (max |compiled - eager| / max |eager| <= 1e-4 in
fp32, 1e-2 in bf16) and times it (its first, compiling step is an extra warm-up); on CPU its peak
memory is not separable from the eager run's and is left out.

Measured on the 2-core CPU machine (AMD EPYC, AVX-512), idle, 2026-12-02, fp32, batch 1, 256²,
median of 3 (`--activation-checkpointing --compile`): torch.mm peak 166-188 GFLOP/s (MKL sgemm; the
oneDNN 3×3 convolutions run faster than it, so a conv net can exceed 100 %):

    Sim-VAE c32          eager     8.17 s/step  2425.7 GFLOP  297 GFLOP/s  158 %  (target >= 60 %: met)
                         compiled  9.13 s/step                266 GFLOP/s  141 %  (0.89x eager; equal to 2.5e-6)
    HDiT hdit_latent_pmrf eager    1.24 s/step   104.8 GFLOP   85 GFLOP/s   45 %  (target >= 40 %: met)
                         compiled  1.56 s/step                 67 GFLOP/s   36 %  (0.79x eager; equal to 2.5e-6)
      activation ckpt    eager     1.71 s/step   131.2 GFLOP   77 GFLOP/s   41 %  peak RSS 2669 -> 2475 MiB

After the decoder's resize convs became phase convs (models/vae_blocks.py), measured back to back
with the code before them, median of 5, when the machine ran slower than above: Sim-VAE 9.65 vs
10.35 s/step (7 % faster), 2264.7 vs 2425.7 GFLOP, 121 % vs 125 % of the peak (target: met).

On this CPU torch.compile (inductor, C++) is slower than eager for both nets: their time is in
oneDNN convolutions / MKL matmuls either way, and inductor's generated loops for the norms and
the neighbourhood-attention gathers do not beat ATen's. At batch 1 the HDiT's memory is mostly
weights, gradients and AdamW state (147 M parameters x 4 x 4 B = 2.4 GB), so recomputing the
activations saves only 7 %; the switch is for large batches and 512² latents on GPUs.

Run from the repository root::

    PYTHONPATH=. python benchmarks/train_step.py [--device cuda --dtype bf16] [--tasks sim_vae hdit looformer]
        [--compile] [--activation-checkpointing] [--size 256] [--batch-size 1] [--reps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import subprocess
import sys
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from roofline import (DTYPES, add_timing_args, count_flops, format_rate, fraction, matmul_peak, median_time,
                      peak_line, peak_memory_meter, relative_diff, sync_for, timing_defaults)
from torch import nn

from latent_pmrf.flow import flow_matching_loss, stratified_uniform
from latent_pmrf.lightning.restoration_config import RestorationOptimConfig
from latent_pmrf.lightning.vae_config import VAELossConfig, VAEOptimConfig
from latent_pmrf.models.compile import compile_module
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
from latent_pmrf.models.velocity import build_velocity, velocity_preset

TASKS = {"sim_vae": "Sim-VAE c32", "hdit": "HDiT hdit_latent_pmrf", "looformer": "LooUFormer latent_pmrf_official"}
VELOCITY_PRESETS = {"hdit": "hdit_latent_pmrf", "looformer": "latent_pmrf_official"}
TARGET_FRACTION = {"sim_vae": 0.60, "hdit": 0.40}
COMPILE_TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2}  # max |compiled - eager| / max |eager|
LATENT_CHANNELS, LATENT_FACTOR = 32, 8  # Sim-VAE c32: (B, 32, S/8, S/8)
ZERO_INIT_STD = 0.02


# ---------------------------------------------------------------------------------------- the tasks
def fit_kernels(config, latent_side: int):
    """The velocity config with each NA kernel clamped to the largest odd size <= its level's map
    side (level i sees latent_side / 2^i tokens a side); unchanged at 256² and above."""
    levels = []
    for i, lvl in enumerate(config.levels):
        side = latent_side // 2**i
        levels.append(dataclasses.replace(lvl, kernel_size=min(lvl.kernel_size, side - 1 + side % 2)))
    return dataclasses.replace(config, levels=levels)


def build_model(task: str, size: int, checkpointing: bool) -> nn.Module:
    if task == "sim_vae":
        return SimVAE(SimVAEConfig.preset("sim_vae_c32"))
    config = velocity_preset(VELOCITY_PRESETS[task], activation_checkpointing=checkpointing)
    return build_velocity(fit_kernels(config, size // LATENT_FACTOR))


def kernel_note(task: str, size: int) -> str | None:
    """Which NA kernels ``fit_kernels`` changed, or None."""
    if task == "sim_vae":
        return None
    preset = velocity_preset(VELOCITY_PRESETS[task])
    fitted = fit_kernels(preset, size // LATENT_FACTOR)
    changed = [f"level {i}: {a.kernel_size} -> {b.kernel_size}"
               for i, (a, b) in enumerate(zip(preset.levels, fitted.levels, strict=True))
               if a.attention == "neighborhood" and a.kernel_size != b.kernel_size]
    return f"{TASKS[task]}: NA kernel clamped to the map ({', '.join(changed)})" if changed else None


def fill_zero_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Zero-initialised parameters get N(0, ZERO_INIT_STD²), so every layer passes a signal."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * ZERO_INIT_STD)
    return model


def optimizer_options(task: str) -> dict:
    o = VAEOptimConfig() if task == "sim_vae" else RestorationOptimConfig()
    return dict(lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)


def make_batch(task: str, batch_size: int, size: int, device: str | torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    if task == "sim_vae":
        return {"image": (torch.rand(batch_size, 3, size, size, generator=gen) * 2 - 1).to(device)}
    shape = (batch_size, LATENT_CHANNELS, size // LATENT_FACTOR, size // LATENT_FACTOR)
    return {"x0": torch.randn(shape, generator=gen).to(device), "x1": torch.randn(shape, generator=gen).to(device),
            "t": stratified_uniform(batch_size, generator=gen).to(device)}


def loss_and_output(task: str, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss and the network's output (reconstruction or velocity)."""
    if task == "sim_vae":
        x, loss_cfg = batch["image"], VAELossConfig()
        recon, posterior = model(x, sample_posterior=True)
        loss = loss_cfg.l1_weight * F.l1_loss(recon.float(), x.float()) + loss_cfg.kl_weight * posterior.kl().mean()
        return loss, recon
    outputs = []

    def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        outputs.append(model(x_t, t))
        return outputs[-1]

    return flow_matching_loss(velocity, batch["x0"], batch["x1"], batch["t"]), outputs[0]


def step_flops(task: str, batch_size: int, size: int, checkpointing: bool) -> int:
    """FLOPs of forward + loss + backward, counted on the meta device."""
    with torch.device("meta"):
        model = build_model(task, size, checkpointing).train()
        batch = make_batch(task, batch_size, size, "meta")
    return count_flops(lambda: loss_and_output(task, model, batch)[0].backward())


# ---------------------------------------------------------------------------------------- timing
def worker(args: argparse.Namespace) -> dict:
    """Time one task (and its compiled copy) in this process; memory in MiB (module docstring).
    The parent builds nothing before its workers have run (``roofline.peak_memory_meter``)."""
    task, device = args.worker, torch.device(args.device)
    cuda = device.type == "cuda"
    sync = sync_for(device)
    peak_mib = peak_memory_meter(device)

    torch.manual_seed(0)
    model = fill_zero_init(build_model(task, args.size, args.worker_checkpointing)).to(device).train()
    batch = make_batch(task, args.batch_size, args.size, device)
    autocast = (lambda: torch.autocast(device.type, torch.bfloat16)) if args.dtype == "bf16" else nullcontext

    def train_step(net: nn.Module, optimizer: torch.optim.Optimizer):
        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss, _ = loss_and_output(task, net, batch)
            loss.backward()
            optimizer.step()
        return step

    def probe(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(2)  # the same posterior noise for eager and compiled
        with autocast():
            loss, output = loss_and_output(task, net, batch)
        return loss.detach(), output.detach()

    optimizer = torch.optim.AdamW(model.parameters(), **optimizer_options(task))
    result = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6,
              "eager_s": median_time(train_step(model, optimizer), args.warmup, args.reps, sync),
              "eager_peak_mib": peak_mib()}
    if args.compile:
        compiled = copy.deepcopy(model)
        compiled.zero_grad(set_to_none=True)
        compile_module(compiled)
        (loss_e, out_e), (loss_c, out_c) = probe(model), probe(compiled)
        result.update(loss_rel_diff=relative_diff(loss_c, loss_e), output_rel_diff=relative_diff(out_c, out_e))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        optimizer = torch.optim.AdamW(compiled.parameters(), **optimizer_options(task))
        result["compiled_s"] = median_time(train_step(compiled, optimizer), max(args.warmup, 1), args.reps, sync)
        result["compiled_peak_mib"] = peak_mib() if cuda else None
    return result


# ---------------------------------------------------------------------------------------- report
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(p)
    p.add_argument("--tasks", nargs="+", choices=TASKS, help="default: sim_vae hdit, and looformer on CUDA")
    p.add_argument("--size", type=int, default=256, help="image side; latents are size/8")
    p.add_argument("--compile", action="store_true", help="also time a compile_module'd copy; check its outputs")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="time the velocity nets with and without it; compare peak memory")
    p.add_argument("--worker", choices=TASKS, help=argparse.SUPPRESS)
    p.add_argument("--worker-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    cuda = timing_defaults(args)
    args.tasks = args.tasks or ["sim_vae", "hdit", *(["looformer"] if cuda else [])]
    if args.size % 32:
        p.error(f"--size must be a multiple of 32 (VAE factor 8 × velocity-net multiple 4), got {args.size}")

    if args.worker:
        print(json.dumps(worker(args)))
        return
    peak_start = matmul_peak(args.device, DTYPES[args.dtype], reps=args.reps)
    rows = []
    for task in args.tasks:
        for checkpointing in ([False, True] if args.activation_checkpointing and task != "sim_vae" else [False]):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", task]
            cmd += ["--worker-checkpointing"] if checkpointing else []
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            rows.append({"task": task, "checkpointing": checkpointing, **json.loads(out.splitlines()[-1])})
    peak_end = matmul_peak(args.device, DTYPES[args.dtype], reps=args.reps)
    peak = max(peak_start, peak_end)
    modes = ("eager", "compiled") if args.compile else ("eager",)
    tolerance = COMPILE_TOLERANCE[args.dtype]
    for row in rows:  # after the workers: see the worker's docstring
        row["flops"] = step_flops(row["task"], args.batch_size, args.size, row["checkpointing"])
        target = TARGET_FRACTION.get(row["task"])
        for mode in modes:
            row[f"{mode}_flops_per_s"] = row["flops"] / row[f"{mode}_s"]
            row[f"{mode}_fraction"] = row[f"{mode}_flops_per_s"] / peak
            row[f"{mode}_target_met"] = None if target is None else row[f"{mode}_fraction"] >= target
        if args.compile:
            row["compiled_equal"] = max(row["loss_rel_diff"], row["output_rel_diff"]) <= tolerance

    from rich.console import Console
    from rich.table import Table

    mem = "peak CUDA allocated memory" if cuda else "peak RSS minus RSS after imports"
    table = Table(title=f"training step: {args.device}, batch {args.batch_size}, {args.size}², {args.dtype}, "
                        f"median of {args.reps}",
                  caption=f"memory: {mem}; % peak: achieved / {args.dtype} torch.mm peak ({format_rate(peak)})")
    for col in ("task", "ckpt", "mode", "params (M)", "s/step", "GFLOP/step", "achieved", "% peak", "target",
                "verdict", "peak MiB"):
        table.add_column(col, justify="left" if col in ("task", "mode", "verdict") else "right")
    verdict = {None: "", True: "[green]met[/green]", False: "[red]NOT met[/red]"}
    for row in rows:
        target = TARGET_FRACTION.get(row["task"])
        for mode in modes:
            memory = row[f"{mode}_peak_mib"]
            table.add_row(TASKS[row["task"]], "on" if row["checkpointing"] else "off", mode, f"{row['params_m']:.1f}",
                          f"{row[f'{mode}_s']:.3f}", f"{row['flops'] / 1e9:.1f}",
                          format_rate(row[f"{mode}_flops_per_s"]), fraction(row[f"{mode}_flops_per_s"], peak),
                          "" if target is None else f">= {target:.0%}", verdict[row[f"{mode}_target_met"]],
                          "n/a" if memory is None else f"{memory:.0f}")
    console = Console(width=max(Console().width, 140))
    console.print(table)
    console.print(peak_line(peak_start, peak_end, args.device, args.dtype))
    for note in filter(None, (kernel_note(task, args.size) for task in args.tasks)):
        console.print(note)
    if args.compile:
        for row in rows:
            console.print(f"{TASKS[row['task']]}{' (checkpointing)' if row['checkpointing'] else ''}: compiled "
                          f"{row['eager_s'] / row['compiled_s']:.2f}x eager speed; |compiled - eager| / |eager|: "
                          f"loss {row['loss_rel_diff']:.1e}, output {row['output_rel_diff']:.1e} "
                          f"(tolerance {tolerance:g}): "
                          + ("[green]equal[/green]" if row["compiled_equal"] else "[red]NOT equal[/red]"))
    for plain, recomputing in itertools.pairwise(rows):  # the off/on pairs of --activation-checkpointing
        if plain["task"] == recomputing["task"] and recomputing["checkpointing"]:
            console.print(f"{TASKS[plain['task']]}: activation checkpointing "
                          f"{recomputing['eager_s'] / plain['eager_s']:.2f}x the step time, peak memory "
                          f"{plain['eager_peak_mib']:.0f} -> {recomputing['eager_peak_mib']:.0f} MiB "
                          f"({plain['eager_peak_mib'] / recomputing['eager_peak_mib']:.2f}x lower)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {k: v for k, v in vars(args).items() if not k.startswith(("json", "worker"))},
                       "matmul_peak_flops_per_s": {"start": peak_start, "end": peak_end, "used": peak},
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
