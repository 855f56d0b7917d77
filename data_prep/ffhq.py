"""FFHQ for training: the 1024×1024 release resized to 512×512 (paper Sec. 4.1: "FFHQ images are
resized to 512×512"), a flat folder of 8-bit PNGs keeping the input names (00000.png ...).

    python -m data_prep.ffhq --input /data/ffhq/images1024x1024 --out /data/ffhq/ffhq512
    python -m data_prep.ffhq --input /data/ffhq/images1024x1024 --out /data/ffhq/ffhq512 --limit 10000

--limit N keeps the first N inputs in sorted path order (the Sim-VAE trains on the first 10,000
FFHQ images; a later run with a larger limit, or none, adds the rest to the same folder). Inputs may
sit in subfolders (the release's 00000/00000.png ...); outputs are flat, so two inputs with the same
file name are refused. A non-square input, or one smaller than 512, is reported and counted as failed.

Resize: antialiased bicubic on the 8-bit image (PIL BICUBIC, whose kernel widens with the reduction
as MATLAB's imresize does). PMRF, whose FFHQ-512 Latent-PMRF trains on, says in its README "we
down-sampled the images to size 512x512 using bi-cubic down-sampling" (no script is released);
Latent-PMRF's own configs read a ready FFHQ_512 folder. DifFace's big2small_face.py instead uses
albumentations SmallestMaxSize, i.e. OpenCV bilinear, which for an exact 2× reduction is the mean of
each 2×2 block; halving the repository's 512² test faces, the two differ by 0.85/255 on average.

Resumable: a finished image (file present and in manifest.csv) is skipped on a rerun; see
data_prep/common.py. Manifest columns: path, sha256, width, height, source.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path, PurePosixPath

from latent_pmrf.data.image_io import read_image, to_uint8

from .common import (BASE_COLUMNS, Job, Result, Summary, build, cli, list_jobs, make_console, make_parser,
                     positive_int, resize_square, write_png)

SCRIPT = "ffhq"
SIZE = 512  # paper Sec. 4.1


def output_name(key: str) -> tuple[str, ...]:
    """``00000/00042.png`` -> ``00042.png`` (flat output folder, PNG)."""
    return (PurePosixPath(key).stem + ".png",)


def process(job: Job, out_dir: Path, size: int) -> Result:
    image = resize_square(to_uint8(read_image(job.source), value_range=(0, 1)), size, job.source)
    return Result(job, rows=[write_png(out_dir, job.outputs[0], image, job.key)])


def main(argv: list[str] | None = None) -> Summary:
    parser = make_parser(SCRIPT, __doc__, "the FFHQ images (1024×1024 PNGs, subfolders allowed)")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="only the first N images in sorted path order (the VAE uses 10000)")
    args = parser.parse_args(argv)
    jobs = list_jobs(args.input, args.out, args.limit, output_name)
    return build(args, SCRIPT, {"size": SIZE, "resize": "pil_bicubic"}, BASE_COLUMNS, jobs,
                 partial(process, out_dir=args.out, size=SIZE), make_console())


if __name__ == "__main__":
    cli(main)
