"""Evaluate a folder of restorations (``latent-pmrf evaluate``): per-image metrics against the
ground truth / the posterior-mean outputs / nothing, set-level metrics against a reference set.

Files pair up by their path relative to each folder, without the extension (``00001.png`` in
``--pred`` with ``00001.png`` or ``00001.jpg`` in ``--gt``), as PMRF's evaluation pairs equal file
names. Reference-set features are cached (``~/.cache/latent-pmrf/features``), keyed by the
feature kind and the folder's file list, sizes and modification times, so a second run on
CelebA-Test's ground truth reads them instead of recomputing.

Unreadable images (corrupt, truncated, empty, not an image, above ``max_pixels`` by their header):
the paper's numbers are means over the whole test set, so by default the first one stops the
evaluation, naming it. With ``skip_unreadable`` (what ``latent-pmrf evaluate`` does) each is named,
its pair is left out, and the result says so: ``meta['images']`` (the results row's ``images``)
counts the pairs evaluated, ``failed`` names every file left out, and the CLI exits with code 3. A
pred/gt name mismatch or two sizes in one pair is a protocol error, never skipped.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..data.image_io import ImageReadError, list_images, read_image
from ..weights import MissingWeightsError, require
from .base import FeatureMetric, ImageMetric
from .registry import metric_info, missing_weights_reason
from .suite import MetricSuite

FEATURE_CACHE = Path.home() / ".cache" / "latent-pmrf" / "features"
# What `evaluate --protocol` can compute; results CSVs record the name beside the metric columns.
PROTOCOLS = {
    "default": "the metric table's conventions (psnr/ssim: BasicSR, RGB 0-255, 11x11 Gaussian SSIM)",
    "sirr": "SIRR benchmarks: GT at the floor multiple of 32, per-channel scikit-image PSNR/SSIM "
            "(metrics/sirr.py)",
}


@dataclass
class EvaluationResult:
    label: str
    summary: dict[str, float]
    per_image: list[dict[str, float | str]]
    skipped: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str | int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # unreadable file -> why (skip_unreadable)


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def pair_files(pred_dir: Path, other_dir: Path, what: str) -> list[Path]:
    """For each image in ``pred_dir``, its counterpart in ``other_dir`` (same relative path, any
    image extension); an error names the first unmatched files."""
    others = {_key(p, other_dir): p for p in list_images(other_dir)}
    preds = list_images(pred_dir)
    missing = [p for p in preds if _key(p, pred_dir) not in others]
    if missing:
        names = ", ".join(_key(p, pred_dir) for p in missing[:5])
        raise FileNotFoundError(f"{len(missing)} of {len(preds)} images in {pred_dir} have no counterpart in the "
                                f"{what} folder {other_dir} (matched by relative path without extension): {names}")
    return [others[_key(p, pred_dir)] for p in preds]


def _batches(columns: list[list[Path]], batch_size: int, max_pixels: int | None = None,
             failed: dict[str, str] | None = None) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """Batches of equal-size images; yields (indices, one (B, 3, H, W) tensor per column). A file
    ``read_image`` refuses raises, or with ``failed`` given is recorded there and its row skipped."""
    pending: list[int] = []
    arrays: list[list[np.ndarray]] = [[] for _ in columns]

    def flush():
        out = [torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2) for a in arrays]
        return pending.copy(), out

    for i in range(len(columns[0])):
        images, errors = [], {}
        for col in columns:
            try:
                images.append(read_image(col[i], max_pixels))
            except ImageReadError as err:
                if failed is None:
                    raise
                errors[str(col[i])] = str(err)
        if errors:
            failed.update(errors)
            continue
        shapes = {img.shape for img in images}
        if len(shapes) > 1:
            raise ValueError(f"image sizes differ for {', '.join(str(c[i]) for c in columns)}: {sorted(shapes)}")
        if pending and (arrays[0][0].shape != images[0].shape or len(pending) == batch_size):
            yield flush()
            pending.clear()
            arrays = [[] for _ in columns]
        pending.append(i)
        for a, img in zip(arrays, images):
            a.append(img)
    if pending:
        yield flush()


def check_results_path(out_csv: str | Path) -> Path:
    """Before any metric is computed: ``out_csv`` is not a folder and its folder exists (or is made)
    and takes new files; else a one-line ValueError naming it."""
    out_csv = Path(out_csv)
    if out_csv.is_dir():
        raise ValueError(f"--out {out_csv} is a folder; give the results CSV's file name")
    try:
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        probe = out_csv.parent / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out {out_csv}: cannot write into {out_csv.parent}: {err.strerror or err}") from err
    return out_csv


def folder_fingerprint(files: list[Path]) -> str:
    h = hashlib.sha1()
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def ffhq_fid_stats() -> tuple[np.ndarray, np.ndarray]:
    """clean-fid's FFHQ-70k (trainval70k, 512², clean) Inception statistics, as the official
    Latent-PMRF evaluation uses."""
    stats = np.load(require("ffhq_stats", "FID against FFHQ-70k (--fid-stats ffhq)"))
    return stats["mu"], stats["sigma"]


def evaluate_folders(pred: str | Path, gt: str | Path | None = None, posterior_mean: str | Path | None = None,
                     metrics: list[str] = ("psnr", "ssim"), *, reference: str | Path | None = None,
                     fid_stats: str | None = None, device: str = "cpu", batch_size: int = 8,
                     label: str | None = None, skip_missing: bool = False, progress: bool = True,
                     built: dict[str, ImageMetric | FeatureMetric] | None = None,
                     cache_dir: Path | None = FEATURE_CACHE, skip_unreadable: bool = False,
                     max_pixels: int | None = None) -> EvaluationResult:
    """Compute ``metrics`` for the images in ``pred``.

    ``reference``: the image set that set-level metrics compare to (default ``gt``);
    ``fid_stats='ffhq'``: FID against FFHQ-70k statistics instead. ``skip_missing``: a metric whose
    weights or inputs are absent is listed in ``skipped`` with the reason instead of failing.
    ``built``: already-built metric objects by name (tests). The metrics are one
    :class:`~latent_pmrf.metrics.suite.MetricSuite`; its reference-set features are cached in
    ``cache_dir`` (None: not cached). Every folder is checked before any metric is built.

    An unreadable image, or one above ``max_pixels`` (its header's size), stops the evaluation
    naming it; with ``skip_unreadable`` its pair (or reference image) is left out instead, named in
    ``failed``, and ``meta['images']`` counts the pairs evaluated (module docstring).
    """
    pred = Path(pred)
    label = label or pred.name
    sources = {"gt": Path(gt) if gt else None, "posterior_mean": Path(posterior_mean) if posterior_mean else None,
               "set": Path(reference) if reference else (Path(gt) if gt else None), "none": pred}
    flags = {"gt": "--gt", "posterior_mean": "--posterior-mean", "set": "--reference or --gt"}
    skipped: dict[str, str] = {}
    wanted = []
    for name in metrics:
        info = metric_info(name)
        ok_source = sources[info.reference] is not None or (name == "fid" and fid_stats == "ffhq")
        reason = None if ok_source else f"needs {flags[info.reference]}"
        if reason is None and (built is None or name not in built):
            reason = missing_weights_reason(name)
        if reason is None:
            wanted.append(name)
        elif skip_missing:
            skipped[name] = reason
        else:
            raise MissingWeightsError(f"metric {name}: {reason}") if "weights" in reason else ValueError(
                f"metric {name} {reason}")
    needs_set = any(metric_info(n).reference == "set" and not (n == "fid" and fid_stats == "ffhq") for n in wanted)
    used = {"pred": pred, **{ref: sources[ref] for ref in ("gt", "posterior_mean")
                             if any(metric_info(n).reference == ref for n in wanted)}}
    if needs_set:
        used["set"] = sources["set"]
    for column, folder in used.items():
        if not folder.is_dir():
            flag = {"pred": "--pred", "set": "--reference" if reference else "--gt"}.get(column, flags.get(column))
            raise FileNotFoundError(f"{flag} folder not found: {folder}")
    pred_files = list_images(pred)
    columns = {"pred": pred_files}
    for ref in ("gt", "posterior_mean"):
        if ref in used:
            columns[ref] = pair_files(pred, sources[ref], ref)
    ref_files = list_images(sources["set"]) if needs_set else []

    stats = {"fid": ffhq_fid_stats()} if fid_stats == "ffhq" and "fid" in wanted else None
    suite = MetricSuite(wanted, device, built={n: m for n, m in (built or {}).items() if n in wanted},
                        reference_stats=stats)
    failed: dict[str, str] | None = {} if skip_unreadable else None
    batches = _batches(list(columns.values()), batch_size, max_pixels, failed)
    if progress:
        from rich.progress import track

        batches = track(batches, total=-(-len(pred_files) // batch_size), description=f"evaluating {label}")
    evaluated: list[int] = []
    for indices, tensors in batches:
        suite.update(**{column: t.to(device) for column, t in zip(columns, tensors)})
        evaluated += indices
    if not evaluated:
        raise ValueError(f"none of the {len(pred_files)} image pairs of {pred} could be read: "
                         + "; ".join(list((failed or {}).values())[:3]))
    if suite.needs_reference:
        suite.set_reference((batch[0].to(device) for _, batch in _batches([ref_files], batch_size, max_pixels, failed)),
                            cache_dir, f"{len(ref_files)}-{folder_fingerprint(ref_files)}")

    summary = suite.compute()
    values = suite.per_image()
    per_image = [{"file": _key(pred_files[i], pred), **{n: float(v[k]) for n, v in values.items()}}
                 for k, i in enumerate(evaluated)]
    meta = {"protocol": "default", "pred": str(pred), "images": len(evaluated), "gt": str(gt or ""),
            "posterior_mean": str(posterior_mean or ""),
            "reference": "ffhq-70k stats (fid)" if fid_stats == "ffhq" else str(sources["set"] or "")}
    if failed:
        meta["unreadable_files"] = len(failed)
    return EvaluationResult(label, summary, per_image, skipped, meta, dict(failed or {}))
