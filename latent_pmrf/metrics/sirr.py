"""The SIRR evaluation protocol (``latent-pmrf evaluate --protocol sirr``): what ERRNet, DSRNet,
RDNet and GenSIRR report on Real20, SIR² and Nature.

Per image (DSRNet ``data/sirs_dataset.py`` ``DSRTestDataset.align`` with ``--if_align``, which
RDNet ``data/dataset_sir.py`` forces on; ``util/index.py`` ``quality_assess`` in both):
  * the ground truth is resized to the floor multiple of 32 of its size (PIL ``Image.resize``,
    bicubic: PIL's default for RGB); the network input is too (``align_to_multiple``), so a
    prediction normally has that size already, and one of another size is resized to it (same filter);
  * PSNR and SSIM per RGB channel on 0-255 values with scikit-image's defaults
    (``peak_signal_noise_ratio`` / ``structural_similarity`` with ``data_range=255``: 7×7 uniform
    window, sample covariance, K1 = 0.01, K2 = 0.03), averaged over the three channels.
Per set: the mean over its images; over several sets: the mean over all their images (GenSIRR's
"Average" of 494 = 20 Real20 + 454 SIR² + 20 Nature), and SIR² pooled over its three subsets.

The released code scores the network's float output (clipped, ×255, not rounded); files written as
8-bit PNGs are scored on their 8-bit levels, which moves PSNR by a few hundredths of a dB at most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.image_io import ImageReadError, list_images, read_image, to_uint8
from ..data.sirr_datasets import SIRR_TEST_SETS, TRANSMISSION, align_to_multiple, list_pairs, pil_resize
from .evaluate import EvaluationResult

PROTOCOL = "sirr"


def sirr_psnr_ssim(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of two uint8 (H, W, 3) images of one size: per RGB channel, averaged."""
    from skimage.metrics import structural_similarity

    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"expected two (H, W, 3) images of one size, got {pred.shape} and {gt.shape}")
    diff = gt.astype(np.float64) - pred.astype(np.float64)
    mse = (diff**2).mean(axis=(0, 1))  # (3,)
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(255.0**2 / mse)  # inf for an identical channel, as scikit-image
    # channel_axis: scikit-image's SSIM of each channel, then their mean
    ssim = structural_similarity(gt, pred, data_range=255, channel_axis=2)
    return float(psnr.mean()), float(ssim)


def protocol_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground truth) as scored: the GT aligned to the floor multiple of 32, the
    prediction resized to it if its size differs. uint8 (H, W, 3)."""
    gt = align_to_multiple(gt)
    return pil_resize(pred, (gt.shape[1], gt.shape[0])), gt


def _read_uint8(path: Path) -> np.ndarray:
    return to_uint8(read_image(path), value_range=(0, 1))


def _prediction_dir(pred: Path) -> Path:
    """``restore --output P`` writes P/restored/: a folder with that child is read there."""
    return pred / "restored" if (pred / "restored").is_dir() else pred


def benchmark_sets(gt: Path) -> list[tuple[str, str, str, tuple[str, ...] | None]]:
    """(name, group, folder relative to ``gt``, listed names) of what ``gt`` holds: one pair folder
    (named after itself, folder ""), or a test root (or a data root with test/) holding sets of
    ``SIRR_TEST_SETS``."""
    if (gt / TRANSMISSION).is_dir():
        return [(gt.name, gt.name, "", None)]
    prefix = "" if (gt / "test").is_dir() else "test/"  # set paths are relative to the data root
    found = [(s.name, s.group, s.path.removeprefix(prefix), s.names) for s in SIRR_TEST_SETS
             if (gt / s.path.removeprefix(prefix) / TRANSMISSION).is_dir()]
    if not found:
        raise FileNotFoundError(f"--gt {gt} is neither a pair folder (no {TRANSMISSION}/) nor a test root holding "
                                f"any of {', '.join(s.path.removeprefix('test/') for s in SIRR_TEST_SETS)}")
    return found


def match_predictions(truths: list[Path], truth_dir: Path, pred_dir: Path) -> list[Path]:
    """The prediction of each ground-truth file: same path relative to its folder, any extension."""
    predictions = {p.relative_to(pred_dir).with_suffix("").as_posix(): p for p in list_images(pred_dir)}
    keys = [t.relative_to(truth_dir).with_suffix("").as_posix() for t in truths]
    missing = [k for k in keys if k not in predictions]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(keys)} images of {truth_dir} have no prediction in {pred_dir} "
                                f"(matched by name without extension): {', '.join(missing[:5])}")
    return [predictions[k] for k in keys]


def evaluate_sirr(pred: str | Path, gt: str | Path, label: str | None = None,
                  progress: bool = True, skip_unreadable: bool = False) -> EvaluationResult:
    """The protocol on a pair folder or a whole test root (see ``benchmark_sets``). Predictions for
    a set at ``gt/S`` sit in ``pred/S`` (``pred/test/SIR2/WildSceneDataset`` for a data root; for one
    pair folder, in ``pred``), or in its ``restored/`` subfolder; each pairs with the GT of the same
    name without extension.

    Summary: ``psnr``/``ssim`` over all images, ``<set>/psnr`` and ``<set>/ssim`` per set, and
    ``sir2/...`` over SIR²'s subsets pooled when the root has more than one of them.

    An unreadable image raises, naming it; with ``skip_unreadable`` (the CLI) its pair is left out,
    named in ``failed``, and ``meta['images']`` and ``meta['sets']`` count the pairs evaluated, as in
    ``evaluate_folders``."""
    pred, gt = Path(pred), Path(gt)
    label = label or pred.name
    sets = benchmark_sets(gt)
    single = sets[0][2] == ""
    per_image: list[dict] = []
    jobs = []
    for name, group, folder, names in sets:
        truths = [t for _, t in list_pairs(gt / folder, names)]
        predictions = match_predictions(truths, gt / folder / TRANSMISSION, _prediction_dir(pred / folder))
        jobs += [(name, group, t, p) for t, p in zip(truths, predictions, strict=True)]
    if progress:
        from rich.progress import track

        jobs = track(jobs, description=f"evaluating {label} (sirr)")
    failed: dict[str, str] = {}
    for name, group, truth, prediction in jobs:
        images = []
        try:
            for path in (prediction, truth):
                images.append(_read_uint8(path))
        except ImageReadError as err:
            if not skip_unreadable:
                raise
            failed[str(path)] = str(err)
            continue
        psnr, ssim = sirr_psnr_ssim(*protocol_pair(*images))
        per_image.append({"file": f"{name}/{truth.stem}", "set": name, "group": group, "psnr": psnr, "ssim": ssim})
    evaluated_sets = {r["set"] for r in per_image}
    if len(evaluated_sets) < len(sets):
        unread = [name for name, *_ in sets if name not in evaluated_sets]
        raise ValueError(f"no image pair of {', '.join(unread)} could be read: " + "; ".join(list(failed.values())[:3]))

    summary: dict[str, float] = {m: float(np.mean([r[m] for r in per_image])) for m in ("psnr", "ssim")}
    groups: dict[str, list[str]] = {}
    for name, group, *_ in sets:
        groups.setdefault(group, []).append(name)
    if not single:
        for name, group, *_ in sets:
            for m in ("psnr", "ssim"):
                summary[f"{name}/{m}"] = float(np.mean([r[m] for r in per_image if r["set"] == name]))
            if groups[group][-1] == name and len(groups[group]) > 1:  # after the group's last set
                for m in ("psnr", "ssim"):
                    summary[f"{group}/{m}"] = float(np.mean([r[m] for r in per_image if r["group"] == group]))
    counts = {name: sum(r["set"] == name for r in per_image) for name, *_ in sets}
    meta = {"protocol": PROTOCOL, "pred": str(pred), "gt": str(gt), "images": len(per_image),
            "sets": ", ".join(f"{n} {c}" for n, c in counts.items())}
    rows = [{k: v for k, v in r.items() if k != "group"} for r in per_image]
    return EvaluationResult(label, summary, rows, meta=meta, failed=failed)
