"""Roofline helpers: every benchmark prints its achieved FLOP/s as a fraction of this machine's
matmul peak, measured in the same run (project issue 16), so a time reads against the limit.

* ``matmul_peak``: FLOP/s of a large square ``torch.mm`` (2·n³ FLOPs per call; n = 4096 on CUDA,
  2048 on CPU), median of ``reps`` calls after ``warmup`` ones, synchronised on CUDA. On CUDA the
  fp32 figure follows ``torch.backends.cuda.matmul.allow_tf32`` (off by default: true fp32), as
  the benchmarks' own matmuls do.
* ``count_flops``: FLOPs of one call under ``torch.utils.flop_counter.FlopCounterMode``, which
  counts matmuls, convolutions and attention (SDPA) and nothing else (norms, activations, the
  optimizer step: 0). Build the models and inputs on the meta device and nothing is computed;
  the count does not depend on the dtype. One formula is corrected: PyTorch (before its PR
  #183405) counts a grouped convolution's weight gradient as a dense one's, ``groups`` times too
  many (a depthwise 3×3 conv at width 1024: ×1024, which made HDiT's step look 10× bigger).
* ``fraction``: "achieved / peak" as a percentage.
* ``median_time``, ``relative_diff``, ``peak_memory_meter``, ``sync_for``: the timing, compiled-vs-
  eager comparison and memory reading every benchmark shares.
* ``add_timing_args``, ``timing_defaults``: the options the training-step benchmarks share
  (``train_step.py``, ``vae_speed.py``) and their per-device defaults.

Run from the repository root; prints the peak for fp32 (and bf16 on CUDA)::

    PYTHONPATH=. python benchmarks/roofline.py [--device cuda] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync_for(device: str | torch.device) -> Callable[[], None]:
    """What makes a timer see finished work on ``device``: CUDA synchronisation, else nothing."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def matmul_peak(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None,
                reps: int = 5, warmup: int = 1) -> float:
    """FLOP/s of an n×n by n×n ``torch.mm`` (2·n³ per call): median over ``reps`` after ``warmup``."""
    device = torch.device(device)
    n = n or (4096 if device.type == "cuda" else 2048)
    sync = sync_for(device)
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen, device=device).to(dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_time(lambda: torch.mm(a, b, out=out), warmup, max(reps, 1), sync)


def median_time(step: Callable[[], object], warmup: int, reps: int, sync: Callable[[], None]) -> float:
    """Median seconds of ``step`` over ``reps`` calls after ``warmup`` ones, each timed to ``sync``."""
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def relative_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|: how a compiled run's output is compared with eager."""
    return ((got.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """``torch.utils.flop_counter``'s formula for ``aten.convolution_backward`` with the weight
    gradient divided by ``groups``: it is the conv (C_in, B, H, W) * (C_out, B, H', W') summed over
    the batch, whose per-group channels the transposed shapes lose."""
    def t(shape):  # (N, C, ...) <-> (C, N, ...)
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:  # grad_input = conv_transpose(grad_out, weight): groups already in w_shape
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:
        x, grad_out = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        flops += conv_flop_count(t(x), t(grad_out), t(out_shape[1]), transposed=False) // groups
    return flops


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()`` as ``FlopCounterMode`` counts them (matmul, conv, attention; forward and,
    if ``fn`` calls it, backward), grouped-conv backward corrected. Works on meta tensors."""
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop}
                         ) as counter:
        fn()
    return counter.get_total_flops()


def peak_memory_meter(device: str | torch.device) -> Callable[[], float]:
    """A function giving this process's peak memory in MiB since now: on CUDA the allocator's
    ``max_memory_allocated``, on CPU the peak RSS (``ru_maxrss``) minus the RSS at this call. A
    process starts with its parent's peak RSS (Linux keeps ``ru_maxrss`` across fork and exec), so a
    parent must build nothing big before the workers that call this have run."""
    import resource

    if torch.device(device).type == "cuda":
        return lambda: torch.cuda.max_memory_allocated() / 2**20
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return lambda: (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kib) / 2**10


def format_rate(flops_per_s: float) -> str:
    """'85.3 GFLOP/s' or '61.2 TFLOP/s'."""
    return f"{flops_per_s / 1e12:.1f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.1f} GFLOP/s"


def fraction(achieved: float, peak: float) -> str:
    """achieved / peak as a percentage, e.g. '42.0 %'."""
    return f"{100 * achieved / peak:.1f} %"


def achieved_cell(flops: float, seconds: float, peak: float) -> str:
    """A table cell: achieved FLOP/s and its fraction of the peak, e.g. '12.3 GFLOP/s (14.1 %)'."""
    return f"{format_rate(flops / seconds)} ({fraction(flops / seconds, peak)})"


def add_timing_args(p: argparse.ArgumentParser) -> None:
    """--device, --batch-size, --reps, --warmup, --dtype and --json, as the training-step benchmarks
    take them; ``timing_defaults`` fills in the per-device defaults after parsing."""
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, help="default: 8 on CUDA, 1 on CPU")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, help="default: 3 on CUDA, 1 on CPU")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast")
    p.add_argument("--json", help="also write the numbers to this file")


def timing_defaults(args: argparse.Namespace) -> bool:
    """Set ``args.batch_size`` (8 on CUDA, 1 on CPU) and ``args.warmup`` (3 / 1) where not given;
    returns whether the device is CUDA."""
    cuda = torch.device(args.device).type == "cuda"
    args.batch_size = args.batch_size or (8 if cuda else 1)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    return cuda


def peak_line(start: float, end: float, device: str, dtype: str) -> str:
    """The line each benchmark prints: the peak measured before and after its runs, and the one used
    (the larger: on a shared machine the lower one saw more load)."""
    return (f"{dtype} matmul peak on {device}: {format_rate(start)} at the start, {format_rate(end)} at the end; "
            f"fractions are of {format_rate(max(start, end))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, help="matrix side; default 4096 on CUDA, 2048 on CPU")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    dtypes = ("fp32", "bf16") if torch.device(args.device).type == "cuda" else ("fp32",)
    for name in dtypes:
        peak = matmul_peak(args.device, DTYPES[name], args.n, args.reps, args.warmup)
        print(f"{name} torch.mm peak on {args.device}: {format_rate(peak)} (median of {args.reps})")


if __name__ == "__main__":
    main()
