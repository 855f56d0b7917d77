"""A CelebA-Test-style synthetic test set for ablations: CelebA-HQ faces at 512×512 (hq/) and their
degraded copies (lq/), made with the paper's training degradation and a fixed seed.

THIS IS NOT THE BENCHMARK. Published numbers (the paper's Tables 1-4 and the methods it compares
with) are measured on the released CelebA-Test (Wang et al., 2021a, GFPGAN: 3,000 CelebA-HQ pairs;
PMRF's README downloads it from GFPGAN's project page). Its images and degradation draws cannot be
rebuilt, so compare with published numbers only on that download; use this rebuild for ablations
and regression checks, where only the same set for every run matters.

    python -m data_prep.celeba_test --input /data/CelebA-HQ --out /data/celeba_test_rebuild

Item i, the i-th input in sorted path order (the first --num, default 3000 = CelebA-Test's size):
    HQ = the input resized to 512 (data_prep.ffhq's resize; a 512 input is kept as is)
    LQ = BFRDegradation.from_preset(--preset)(HQ, item_rng(--seed, i)), 8-bit
with hflip_prob = 0 and gt_gray = False, so that HQ is the unaltered CelebA-HQ face (the flip is
still drawn, so every other parameter is the preset's own draw; about 1 % of LQs are gray while
their HQ stays in colour). hq/ and lq/ hold the same file names (PNG). manifest.csv has a row per
file; LQ rows carry index, seed and the degradation parameters (kernel_type, sigma_x, sigma_y,
rotation in radians, scale, noise_std in [0, 1] units, jpeg_quality, to_gray), so any pair can be
regenerated from its row. The output does not depend on --workers. Resumable like every data_prep
script (see data_prep/common.py).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from latent_pmrf.data.bfr_datasets import item_rng
from latent_pmrf.data.degradations import DEGRADATION_PRESETS, BFRDegradation, DegradationParams
from latent_pmrf.data.image_io import read_image, to_uint8

from .common import (BASE_COLUMNS, Job, Result, Summary, build, cli, list_jobs, make_console, make_parser,
                     non_negative_int, positive_int, resize_square, write_png)

SCRIPT = "celeba_test"
SIZE = 512
NUM_CELEBA_TEST = 3000  # the released CelebA-Test's size
PARAM_COLUMNS = ("kernel_type", "sigma_x", "sigma_y", "rotation", "scale", "noise_std", "jpeg_quality", "to_gray")
COLUMNS = (*BASE_COLUMNS, "index", "seed", *PARAM_COLUMNS)


def output_names(key: str) -> tuple[str, ...]:
    name = PurePosixPath(key).stem + ".png"
    return (f"hq/{name}", f"lq/{name}")


def make_degradation(preset: str) -> BFRDegradation:
    """The preset with the HQ left untouched: no flip, no gray HQ (see the module docstring)."""
    return BFRDegradation.from_preset(preset, hflip_prob=0.0, gt_gray=False)


def param_fields(params: DegradationParams) -> dict:
    return dict(kernel_type=params.kernel_type or "", sigma_x=params.sigma_x, sigma_y=params.sigma_y,
                rotation=params.rotation, scale=params.scale, noise_std=params.noise_std,
                jpeg_quality="" if params.jpeg_quality is None else params.jpeg_quality, to_gray=int(params.to_gray))


def process(job: Job, out_dir: Path, size: int, degradation: BFRDegradation, seed: int) -> Result:
    hq = resize_square(to_uint8(read_image(job.source), value_range=(0, 1)), size, job.source)
    rng = item_rng(seed, job.index)
    params = degradation.sample_params(rng)
    lq, _ = degradation.apply(hq.astype(np.float32) / np.float32(255.0), params, rng)
    hq_row = write_png(out_dir, job.outputs[0], hq, job.key) | dict(index=job.index, seed=seed)
    lq_row = write_png(out_dir, job.outputs[1], to_uint8(lq, value_range=(0, 1)), job.key) | dict(
        index=job.index, seed=seed, **param_fields(params))
    return Result(job, rows=[hq_row, lq_row])


def main(argv: list[str] | None = None) -> Summary:
    parser = make_parser(SCRIPT, __doc__, "the CelebA-HQ images (1024×1024 or 512×512)")
    parser.add_argument("--num", type=positive_int, default=NUM_CELEBA_TEST,
                        help="the first NUM inputs in sorted path order (default %(default)s, CelebA-Test's size)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="degradation seed (default %(default)s)")
    parser.add_argument("--preset", default="difface", choices=sorted(DEGRADATION_PRESETS),
                        help="degradation preset (default %(default)s: the paper's training degradation)")
    args = parser.parse_args(argv)
    jobs = list_jobs(args.input, args.out, args.num, output_names)
    settings = {"size": SIZE, "resize": "pil_bicubic", "seed": args.seed, "preset": args.preset,
                "hflip_prob": 0.0, "gt_gray": False}
    process_job = partial(process, out_dir=args.out, size=SIZE, degradation=make_degradation(args.preset),
                          seed=args.seed)
    return build(args, SCRIPT, settings, COLUMNS, jobs, process_job, make_console())


if __name__ == "__main__":
    cli(main)
