"""Images per second of the DifFace degradation: ``BFRDegradation("difface")`` vs a straightforward
BasicSR/GFPGAN implementation, on the same draws, with the two outputs compared bit for bit.

The reference (``gfpgan_reference``) follows GFPGAN's ``FFHQDegradationDataset.__getitem__`` step
by step on an RGB float32 input: to BGR (as ``cv2.imread`` gives), ``cv2.flip`` for the flip,
the kernel built the BasicSR way (``mesh_grid`` with ``np.hstack``, ``sigma_matrix2``, ``pdf2``
with ``np.dot``, normalised), ``cv2.filter2D``, bilinear ``cv2.resize`` down, Gaussian noise
``noise * sigma / 255.`` (sigma in 8-bit units: ``noise_std × 255``) and ``np.clip``, JPEG by
``cv2.imencode`` of the float image ×255 (OpenCV converts to uint8) and ``cv2.imdecode`` / 255,
bilinear resize back, gray by ``cvtColor`` + ``np.tile``, ``img2tensor`` (HWC BGR -> CHW RGB
tensor) and GFPGAN's torch rounding.

Both get the same draws: the scalars come from our ``sample_params`` with the generator
``default_rng(SeedSequence([seed, i]))`` (the reference rebuilds the kernel itself from the kernel
type, sigmas and rotation, inside its timed loop), and both draw the noise with
``rng.standard_normal(shape, dtype=float32)`` from that generator right after the parameters,
as ``apply`` does. Ours is timed as ``deg(img, rng)`` (parameters, kernel and pipeline); the
reference as its whole function from the parameters on. Draw ``i`` uses image ``i % k`` of a few
512² photos (``shared/data/faces/hq`` if present, else scikit-image's astronaut, chelsea and
coffee). OpenCV and torch run on one thread (``cv2.setNumThreads(1)``,
``torch.set_num_threads(1)``): the speed of one data-loader worker. Images/s is the median
over ``--rounds`` rounds; within a round ours and the reference alternate draw by draw, so a
busy machine slows both alike. The outputs are compared in a separate untimed pass over all draws.

The per-step times of ours come from the real ``apply``, its OpenCV calls, noise draw and
``jpeg_bgr`` clocked in place (``traced_apply``); the reference clocks its own steps.

Measured on the 2-core CPU machine (200 draws over 4 faces, 512², one thread, median of 3
rounds): ours 1.11x the reference, outputs identical (max |diff| 0 for LQ and GT over all draws).
``cv2.filter2D`` is ~80% of either: with a 41×41 kernel (any kernel of 13×13 or more) it is
OpenCV's DFT correlation, the same call in both, so the margin is in the rest: channel swaps by
``cv2.cvtColor`` instead of NumPy copies of reversed views (~2.3 ms per 512² image each) and
in-place rounding. Before those changes ours measured 0.94x.

Run from the repository root::

    PYTHONPATH=. python benchmarks/degradation_speed.py [--n 200] [--size 512] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from latent_pmrf.cli.degrade_preview import square_resize
from latent_pmrf.data import degradations
from latent_pmrf.data.degradations import BFRDegradation, DegradationParams
from latent_pmrf.data.image_io import list_images, read_image

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "hq"
N_IMAGES = 4
TARGET_RATIO = 1.0
STEPS = ("params + kernel", "blur", "resize down", "noise", "jpeg", "resize up", "rest")


def load_photos(size: int) -> tuple[list[np.ndarray], str]:
    if FACES.is_dir():
        files = list_images(FACES, limit=N_IMAGES)
        return [square_resize(read_image(f), size) for f in files], f"{len(files)} faces from {FACES}"
    import skimage.data

    photos = [getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee")]
    return ([square_resize(p.astype(np.float32) / 255.0, size) for p in photos],
            "scikit-image astronaut, chelsea, coffee")


# ----------------------------------------------------------------- the BasicSR/GFPGAN reference
def basicsr_bivariate_gaussian(kernel_size: int, sig_x: float, sig_y: float, theta: float,
                               isotropic: bool) -> np.ndarray:
    """basicsr.data.degradations: mesh_grid, sigma_matrix2, pdf2, bivariate_Gaussian."""
    ax = np.arange(-kernel_size // 2 + 1.0, kernel_size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    grid = np.hstack((xx.reshape((kernel_size * kernel_size, 1)),
                      yy.reshape(kernel_size * kernel_size, 1))).reshape(kernel_size, kernel_size, 2)
    if isotropic:
        sigma_matrix = np.array([[sig_x**2, 0], [0, sig_x**2]])
    else:
        d_matrix = np.array([[sig_x**2, 0], [0, sig_y**2]])
        u_matrix = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        sigma_matrix = np.dot(u_matrix, np.dot(d_matrix, u_matrix.T))
    inverse_sigma = np.linalg.inv(sigma_matrix)
    kernel = np.exp(-0.5 * np.sum(np.dot(grid, inverse_sigma) * grid, 2))
    return kernel / np.sum(kernel)


def gfpgan_reference(img_rgb: np.ndarray, p: DegradationParams, rng: np.random.Generator,
                     kernel_size: int, gt_gray: bool = True,
                     times: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """GFPGAN FFHQDegradationDataset.__getitem__ from the parameters on; (LQ, GT) CHW RGB tensors.
    ``times`` (optional) accumulates seconds per step."""
    clock = [time.perf_counter()]

    def lap(step: str) -> None:
        if times is not None:
            now = time.perf_counter()
            times[step] += now - clock[0]
            clock[0] = now

    img_gt = cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR)  # cv2.imread gives BGR
    if p.hflip:
        cv2.flip(img_gt, 1, img_gt)
    h, w, _ = img_gt.shape
    lap("rest")
    img_lq = img_gt
    if p.kernel_type is not None:
        kernel = basicsr_bivariate_gaussian(kernel_size, p.sigma_x, p.sigma_y, p.rotation, p.kernel_type == "iso")
        lap("params + kernel")
        img_lq = cv2.filter2D(img_gt, -1, kernel)
        lap("blur")
    img_lq = cv2.resize(img_lq, (int(w // p.scale), int(h // p.scale)), interpolation=cv2.INTER_LINEAR)
    lap("resize down")
    if p.noise_std > 0:  # random_add_gaussian_noise: sigma in 8-bit units
        sigma = p.noise_std * 255.0
        noise = rng.standard_normal(img_lq.shape, dtype=np.float32) * sigma / 255.0
        img_lq = np.clip(img_lq + noise, 0, 1)
        lap("noise")
    if p.jpeg_quality is not None:  # random_add_jpg_compression
        img_lq = np.clip(img_lq, 0, 1)
        _, encimg = cv2.imencode(".jpg", img_lq * 255.0, [int(cv2.IMWRITE_JPEG_QUALITY), p.jpeg_quality])
        img_lq = np.float32(cv2.imdecode(encimg, 1)) / 255.0
        lap("jpeg")
    img_lq = cv2.resize(img_lq, (w, h), interpolation=cv2.INTER_LINEAR)
    lap("resize up")
    if p.to_gray:
        img_lq = cv2.cvtColor(img_lq, cv2.COLOR_BGR2GRAY)
        img_lq = np.tile(img_lq[:, :, None], [1, 1, 3])
        if gt_gray:
            img_gt = cv2.cvtColor(img_gt, cv2.COLOR_BGR2GRAY)
            img_gt = np.tile(img_gt[:, :, None], [1, 1, 3])
    img_gt, img_lq = (torch.from_numpy(cv2.cvtColor(x, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)).float()
                      for x in (img_gt, img_lq))  # basicsr img2tensor(bgr2rgb=True, float32=True)
    img_lq = torch.clamp((img_lq * 255.0).round(), 0, 255) / 255.0
    lap("rest")
    return img_lq, img_gt


def to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


# ----------------------------------------------------------------- ours, step by step
class _Traced:
    """Stands in for a module or generator: the named methods record (step, start, end), the
    rest pass through."""

    def __init__(self, target, steps: dict, events: list):
        self._target, self._steps, self._events = target, steps, events

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if name not in self._steps:
            return attr

        def traced(*args, **kwargs):
            start = time.perf_counter()
            out = attr(*args, **kwargs)
            step = self._steps[name]
            if callable(step):  # cv2.resize: the first call of an image is the ↓s, the second the ↑s
                step = step(self._events)
            self._events.append((step, start, time.perf_counter()))
            return out

        return traced


@contextmanager
def traced_apply(times: dict):
    """Within the block, ``BFRDegradation.apply``'s own calls are clocked: a step runs from the
    start of its call (``cv2.filter2D``, ``cv2.resize``, ``rng.standard_normal``, ``jpeg_bgr``) to
    the start of the next step's, so the noise step includes its scaling, addition and clipping;
    the last step (the ↑s resize) counts its call alone. Yields ``apply(img, params, rng)``;
    ``times`` accumulates seconds per step, ``rest`` is what the steps leave of the whole call."""
    events: list = []
    jpeg = degradations.jpeg_bgr

    def resize_step(events: list) -> str:
        return "resize up" if any(step == "resize down" for step, _, _ in events) else "resize down"

    def traced_jpeg(*args):
        start = time.perf_counter()
        out = jpeg(*args)
        events.append(("jpeg", start, time.perf_counter()))
        return out

    def apply(deg: BFRDegradation, img: np.ndarray, params: DegradationParams, rng: np.random.Generator):
        events.clear()
        start = time.perf_counter()
        out = deg.apply(img, params, _Traced(rng, {"standard_normal": "noise"}, events))
        total = time.perf_counter() - start
        spans = [(step, (events[k + 1][1] if k + 1 < len(events) else end) - begin)
                 for k, (step, begin, end) in enumerate(events)]
        for step, seconds in spans:
            times[step] += seconds
        times["rest"] += total - sum(sec for _, sec in spans)
        return out

    saved = degradations.cv2
    degradations.cv2 = _Traced(cv2, {"filter2D": "blur", "resize": resize_step}, events)
    degradations.jpeg_bgr = traced_jpeg
    try:
        yield apply
    finally:
        degradations.cv2, degradations.jpeg_bgr = saved, jpeg


# ----------------------------------------------------------------- measurement
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="draws per timed run")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # the float -> uint8 imencode notice

    deg = BFRDegradation.from_preset("difface")
    photos, source = load_photos(args.size)
    seeds = [np.random.SeedSequence([args.seed, i]) for i in range(args.n)]
    k = deg.config.kernel_size

    def one_round() -> tuple[float, float]:
        """Seconds of ours and of the reference over all draws, alternating per draw (which one
        goes first alternates too) so that both see the same machine load."""
        ours_rngs = [np.random.default_rng(s) for s in seeds]
        pending = []  # per draw: the parameters and the generator right after them (the noise's)
        for s in seeds:
            rng = np.random.default_rng(s)
            pending.append((deg.sample_params(rng), rng))
        ours = reference = 0.0
        for i in range(args.n):
            img, (params, rng) = photos[i % len(photos)], pending[i]
            for ours_turn in ((True, False) if i % 2 == 0 else (False, True)):
                start = time.perf_counter()
                if ours_turn:
                    deg(img, ours_rngs[i])
                    ours += time.perf_counter() - start
                else:
                    gfpgan_reference(img, params, rng, k, deg.config.gt_gray)
                    reference += time.perf_counter() - start
        return ours, reference

    one_round()  # warm-up (OpenCV's DFT plans, allocator)
    ours_s, ref_s = zip(*(one_round() for _ in range(args.rounds)))

    # untimed: outputs compared bit for bit, per-step times of both
    max_lq = max_gt = 0.0
    differing_draws = kernels_equal = kernels_equal_f32 = blurred = 0
    ours_steps: dict[str, float] = defaultdict(float)
    ref_steps: dict[str, float] = defaultdict(float)
    with traced_apply(ours_steps) as apply:
        for i, s in enumerate(seeds):
            img, rng = photos[i % len(photos)], np.random.default_rng(s)
            start = time.perf_counter()
            params = deg.sample_params(rng)
            ours_steps["params + kernel"] += time.perf_counter() - start
            ref_rng = copy.deepcopy(rng)
            lq, gt = apply(deg, img, params, rng)
            ref_lq, ref_gt = (to_hwc(t) for t in gfpgan_reference(img, params, ref_rng, k, deg.config.gt_gray,
                                                                    ref_steps))
            diff_lq, diff_gt = float(np.abs(lq - ref_lq).max()), float(np.abs(gt - ref_gt).max())
            max_lq, max_gt = max(max_lq, diff_lq), max(max_gt, diff_gt)
            differing_draws += diff_lq > 0 or diff_gt > 0
            if params.kernel is not None:
                ref_kernel = basicsr_bivariate_gaussian(k, params.sigma_x, params.sigma_y, params.rotation,
                                                        params.kernel_type == "iso")
                blurred += 1
                kernels_equal += np.array_equal(params.kernel, ref_kernel)
                kernels_equal_f32 += np.array_equal(params.kernel.astype(np.float32), ref_kernel.astype(np.float32))

    ours_ips = args.n / statistics.median(ours_s)
    ref_ips = args.n / statistics.median(ref_s)
    ratio = ours_ips / ref_ips
    identical = max_lq == 0 and max_gt == 0

    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"DifFace degradation, {args.size}², {args.n} draws over {source}, one thread "
                        f"(cv2.setNumThreads(1), torch.set_num_threads(1)), median of {args.rounds} rounds",
                  caption="ratio: ours / reference images per second")
    for col in ("implementation", "images/s", "ms/image", "rounds (s)"):
        table.add_column(col, justify="left" if col == "implementation" else "right")
    for name, ips, runs in (("BFRDegradation (ours)", ours_ips, ours_s), ("GFPGAN/BasicSR reference", ref_ips, ref_s)):
        table.add_row(name, f"{ips:.1f}", f"{1000 / ips:.2f}", " ".join(f"{t:.2f}" for t in runs))
    table.add_row("ratio", f"{ratio:.3f}x", "", "", style="bold")
    console.print(table)
    console.print(f"max |LQ ours - reference| = {max_lq:.3g}, max |GT ours - reference| = {max_gt:.3g} "
                  f"over {args.n} draws ({differing_draws} draws differ); kernels bit-identical to BasicSR's in "
                  f"{kernels_equal}/{blurred} blurred draws as float64, {kernels_equal_f32}/{blurred} as the float32 "
                  "that cv2.filter2D uses on a float32 image")

    steps = Table(title="per step (untimed pass, ms/image)")
    for col in ("step", "ours", "share", "reference"):
        steps.add_column(col, justify="left" if col == "step" else "right")
    ours_total, ref_total = sum(ours_steps.values()), sum(ref_steps.values())
    for step in STEPS:
        steps.add_row(step, f"{1000 * ours_steps[step] / args.n:.2f}", f"{ours_steps[step] / ours_total:.0%}",
                      f"{1000 * ref_steps[step] / args.n:.2f}")
    steps.add_row("total", f"{1000 * ours_total / args.n:.2f}", "", f"{1000 * ref_total / args.n:.2f}", style="bold")
    console.print(steps)
    console.print("params + kernel: ours = sample_params (draws and kernel), reference = BasicSR's kernel build\n"
                  "rest: ours = BGR/flip copy, gray, RGB, rounding; reference = cvtColor, cv2.flip, gray, "
                  "img2tensor, torch rounding", style="dim")
    met = ratio >= TARGET_RATIO and identical
    console.print(f"ours / reference {ratio:.3f}x, outputs {'identical' if identical else 'DIFFERENT'} "
                  f"(target >= {TARGET_RATIO}x and identical): " + ("[green]met[/green]" if met else "[red]NOT met[/red]"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {key: value for key, value in vars(args).items() if key != "json"}, "images": source,
                       "ours_images_per_s": ours_ips, "reference_images_per_s": ref_ips, "ratio": ratio,
                       "rounds_s": {"ours": ours_s, "reference": ref_s},
                       "max_abs_diff": {"lq": max_lq, "gt": max_gt}, "differing_draws": differing_draws,
                       "kernels_identical": {"float64": kernels_equal, "float32": kernels_equal_f32,
                                             "blurred_draws": blurred},
                       "steps_ms": {"ours": {s: 1000 * ours_steps[s] / args.n for s in STEPS},
                                    "reference": {s: 1000 * ref_steps[s] / args.n for s in STEPS}},
                       "target_met": met}, f, indent=2)


if __name__ == "__main__":
    main()
