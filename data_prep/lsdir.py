"""LSDIR for the Sim-VAE: 512×512 crops with stride 384, kept where Q-Align rates them >= 3.5
(paper Sec. 4.1: "we crop LSDIR images into 512×512 patches and filter them using Q-Align with a
minimum score threshold of 3.5"; crop 512 and step 384 are in the official config's folder name,
HR_sub_c512_s384).

    python -m data_prep.lsdir --input /data/LSDIR/train/HR --out /data/LSDIR/train/HR_sub_c512_s384
    python -m data_prep.lsdir --input ... --out ... --skip-filter      # crops only, no Q-Align

Crops follow BasicSR's extract_subimages: along each side the positions 0, step, 2·step, ... that
fit, plus the last one (side - crop) when not already there; they are numbered row by row from 1
and written beside the input's relative path (0001000/0000001.png -> 0001000/0000001_s001.png ...).
An image smaller than the crop is skipped and counted.

Two stages, both resumable (see data_prep/common.py):
  1. crop, with --workers processes: every crop is written and gets a manifest row (qalign empty,
     kept 1); an input is done when all its crops have rows and its kept crops exist;
  2. filter, in this process on --device: every crop without a score is rated by pyiqa's `qalign`
     metric; a crop under --min-score is deleted, and its row stays with its score and kept 0.
     --skip-filter leaves stage 2 out; a later run without it rates the crops left unscored.
The Q-Align weights (Hugging Face model q-future/one-align, which pyiqa loads through transformers
from the hub cache) are looked for before any work; if they are absent the run stops with an error
saying what is missing and where it looked.

Manifest columns: path, sha256, width, height, source, top, left, num_crops, qalign, kept.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import product
from pathlib import Path, PurePosixPath

import numpy as np
from rich.console import Console

from latent_pmrf.data.image_io import read_image, to_uint8
from latent_pmrf.weights import WEIGHT_FILES, hf_cache_dir, hf_cached_snapshot, hf_repo_dir

from .common import (BASE_COLUMNS, MANIFEST_NAME, DataPrepError, Job, Manifest, Result, Summary, check_settings,
                     cli, existing_files, list_jobs, make_console, make_parser, positive_int, progress_bar,
                     remove_stale_temporaries, report_plan, report_summary, run_jobs, write_png)

SCRIPT = "lsdir"
COLUMNS = (*BASE_COLUMNS, "top", "left", "num_crops", "qalign", "kept")
CROP, STEP = 512, 384  # official config: HR_sub_c512_s384
MIN_SCORE = 3.5  # paper Sec. 4.1
QALIGN_REPO = WEIGHT_FILES["qalign"].filename  # q-future/one-align, what pyiqa 0.1.16's QAlign loads


@dataclass
class LsdirSummary(Summary):
    crops_scored: int = 0
    crops_kept: int = 0  # of those scored in this run
    crops_rejected: int = 0  # of those scored in this run (deleted)
    crops_unscored: int = 0  # in the manifest, awaiting a score (reported by dry runs)


# ---------------------------------------------------------------------------------- stage 1: crops
def crop_positions(length: int, crop: int, step: int) -> list[int]:
    """0, step, 2·step, ... while a crop fits, then ``length - crop`` if not already there; [] if
    the side is shorter than the crop."""
    positions = list(range(0, length - crop + 1, step))
    if positions and positions[-1] != length - crop:
        positions.append(length - crop)
    return positions


def process(job: Job, out_dir: Path, crop: int, step: int) -> Result:
    image = to_uint8(read_image(job.source), value_range=(0, 1))
    height, width = image.shape[:2]
    tops, lefts = crop_positions(height, crop, step), crop_positions(width, crop, step)
    if not tops or not lefts:
        return Result(job, skipped=f"{job.source} is {width}x{height}, smaller than the {crop}x{crop} crop")
    key = PurePosixPath(job.key)
    rows = []
    for number, (top, left) in enumerate(product(tops, lefts), start=1):
        rel = (key.parent / f"{key.stem}_s{number:03d}.png").as_posix()
        row = write_png(out_dir, rel, image[top : top + crop, left : left + crop], job.key)
        rows.append(row | dict(top=top, left=left, num_crops=len(tops) * len(lefts), qalign="", kept=1))
    return Result(job, rows=rows)


def crops_by_source(manifest: Manifest) -> dict[str, list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in manifest.rows():
        groups.setdefault(row["source"], []).append(row)
    return groups


def source_done(job: Job, crops: dict[str, list[dict[str, str]]], existing: set[str]) -> bool:
    """All the input's crops have rows, and those kept exist."""
    rows = crops.get(job.key, [])
    return (bool(rows) and len(rows) == int(rows[0]["num_crops"])
            and all(row["kept"] == "0" or row["path"] in existing for row in rows))


# ---------------------------------------------------------------------------------- stage 2: Q-Align
def qalign_snapshot(cache_dir: str | Path | None = None) -> Path:
    """The local snapshot of q-future/one-align, checked complete (config, image processor,
    tokenizer, every weight shard), in the Hugging Face hub cache that transformers reads
    (``huggingface_hub.constants.HF_HUB_CACHE`` unless ``cache_dir``). ``DataPrepError`` naming
    what is missing and where otherwise."""
    cache_dir = Path(cache_dir if cache_dir is not None else hf_cache_dir())
    hint = (f"pyiqa's `qalign` metric loads the Hugging Face model {QALIGN_REPO} (a 7B-parameter model) through "
            f"transformers from the hub cache {cache_dir} (HF_HUB_CACHE, or HF_HOME/hub; default "
            f"~/.cache/huggingface/hub). Download it there with `hf download {QALIGN_REPO}`, or run with "
            f"--skip-filter to write the crops without the Q-Align filter.")
    snapshot = hf_cached_snapshot(QALIGN_REPO, ["config.json"], cache_dir)
    if snapshot is None:
        raise DataPrepError(f"Q-Align weights not found: no snapshot of {QALIGN_REPO} at "
                            f"{hf_repo_dir(QALIGN_REPO, cache_dir)}. {hint}")
    missing = [] if (snapshot / "preprocessor_config.json").is_file() else ["preprocessor_config.json"]
    if not any((snapshot / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        missing.append("tokenizer.model")
    missing += missing_weight_files(snapshot)
    if missing:
        raise DataPrepError(f"Q-Align weights incomplete: {snapshot} lacks {', '.join(missing)}. {hint}")
    return snapshot


def missing_weight_files(snapshot: Path) -> list[str]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = snapshot / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [shard for shard in shards if not (snapshot / shard).is_file()]
    if any((snapshot / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        return []
    return ["the weights (model.safetensors[.index.json] or pytorch_model.bin[.index.json])"]


def check_qalign_code() -> None:
    """pyiqa's Q-Align module imports packages that pyiqa does not require (e.g. icecream)."""
    try:
        importlib.import_module("pyiqa.archs.qalign_arch")
    except ImportError as err:
        raise DataPrepError(f"pyiqa's Q-Align code cannot be imported ({err}); install the missing package "
                            f"(pip install {err.name or '...'}) or run with --skip-filter") from err


def load_qalign(device: str | None) -> Callable[[np.ndarray], float]:
    """``score(image)``: Q-Align quality in [1, 5] of an (H, W, 3) float RGB image in [0, 1]."""
    import pyiqa
    import torch

    try:
        metric = pyiqa.create_metric("qalign", device=None if device is None else torch.device(device))
    except Exception as err:  # transformers/pyiqa raise many types; name the model and the way out
        raise DataPrepError(f"could not load Q-Align ({QALIGN_REPO}) through pyiqa: {err}; "
                            f"run with --skip-filter to crop without it") from err

    def score(image: np.ndarray) -> float:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]  # (1, 3, H, W)
        with torch.no_grad():
            return float(metric(x).item())

    return score


def unscored(manifest: Manifest) -> list[str]:
    return sorted(row["path"] for row in manifest.rows() if row["qalign"] == "" and row["kept"] != "0")


def filter_crops(out_dir: Path, manifest: Manifest, score: Callable[[np.ndarray], float], min_score: float,
                 summary: LsdirSummary, console: Console) -> None:
    """Score every unscored crop of the open ``manifest``; delete those under ``min_score``. The
    file goes before its row is updated, so an interruption never leaves a rejected crop in the
    folder (at worst a crop is cut and scored again)."""
    pending = [path for path in unscored(manifest) if (out_dir / path).is_file()]
    with progress_bar(console) as progress:
        task = progress.add_task(f"{SCRIPT} Q-Align", total=len(pending))
        for path in pending:
            value = score(read_image(out_dir / path))
            keep = value >= min_score
            if not keep:
                (out_dir / path).unlink()
            manifest.append([manifest.row(path) | dict(qalign=repr(value), kept=int(keep))])
            summary.crops_scored += 1
            summary.crops_kept += keep
            summary.crops_rejected += not keep
            progress.advance(task)


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> LsdirSummary:
    parser = make_parser(SCRIPT, __doc__, "the LSDIR HR images (subfolders allowed)")
    parser.add_argument("--crop", type=positive_int, default=CROP, help="crop size (default %(default)s)")
    parser.add_argument("--step", type=positive_int, default=STEP, help="crop stride (default %(default)s)")
    parser.add_argument("--min-score", type=float, default=MIN_SCORE,
                        help="keep crops whose Q-Align score is >= this (default %(default)s)")
    parser.add_argument("--skip-filter", action="store_true",
                        help="write the crops without scoring them (no Q-Align weights needed)")
    parser.add_argument("--device", default=None, help="Q-Align device (default: CUDA if available, else CPU)")
    args = parser.parse_args(argv)
    console = make_console()

    weights_problem = None
    if not args.skip_filter:  # before any work: the weights, then the code that loads them
        try:
            qalign_snapshot()
        except DataPrepError as err:
            if not args.dry_run:
                raise
            weights_problem = str(err)
        if not args.dry_run:
            check_qalign_code()

    jobs = list_jobs(args.input, args.out, None, lambda key: ())
    check_settings(args.out, SCRIPT, {"crop": args.crop, "step": args.step, "min_score": args.min_score},
                   write=not args.dry_run)
    manifest = Manifest.load(args.out / MANIFEST_NAME, COLUMNS)
    existing = existing_files(args.out)
    crops = crops_by_source(manifest)
    to_do = [job for job in jobs if not source_done(job, crops, existing)]
    summary = LsdirSummary(total=len(jobs), done_before=len(jobs) - len(to_do), to_do=len(to_do))
    report_plan(console, SCRIPT, summary, args.dry_run)
    if args.dry_run:
        summary.crops_unscored = len(unscored(manifest))
        console.print(f"{SCRIPT}: {len(manifest)} crops in the manifest, {summary.crops_unscored} without a "
                      f"Q-Align score", highlight=False)
        if weights_problem:
            console.print(weights_problem, style="red", markup=False, highlight=False)
        return summary

    remove_stale_temporaries(args.out, existing)
    with manifest:
        run_jobs(to_do, partial(process, out_dir=args.out, crop=args.crop, step=args.step), manifest,
                 args.workers, f"{SCRIPT} crops", summary, console)
        if not args.skip_filter and unscored(manifest):  # the model is loaded only when there is work
            filter_crops(args.out, manifest, load_qalign(args.device), args.min_score, summary, console)
        kept = sum(row["kept"] == "1" for row in manifest.rows())
    report_summary(console, SCRIPT, summary)
    if not args.skip_filter:
        console.print(f"{SCRIPT} Q-Align: {summary.crops_scored} crops scored, {summary.crops_kept} kept "
                      f"(>= {args.min_score}), {summary.crops_rejected} deleted", highlight=False)
    console.print(f"{SCRIPT}: the folder now holds {kept} crops", highlight=False)
    return summary


if __name__ == "__main__":
    cli(main)
