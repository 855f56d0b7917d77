"""Convergence curves of training runs and the speed-up factor of the paper's 5.79× claim (Sec. 4.2):
the steps run B needs to reach run A's final value, linearly interpolated between logged points,
divided into run A's last step."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .run_logs import read_logged_metrics
from ..metrics.registry import better


def read_curve(run: str | Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``metric`` from a run directory (its csv/version_*/metrics.csv) or a CSV
    file with ``step`` and ``metric`` columns; rows without the metric are skipped, steps sorted."""
    run = Path(run)
    if run.is_dir():
        rows = read_logged_metrics(run)
    elif run.is_file():
        with run.open() as f:
            rows = list(csv.DictReader(f))
    else:
        raise FileNotFoundError(f"run not found: {run} (a run directory or a CSV file)")
    points = sorted({int(float(r["step"])): float(r[metric]) for r in rows if r.get(metric) not in (None, "")}.items())
    if not points:
        names = sorted({k for r in rows for k, v in r.items() if v not in (None, "")} - {"step", "epoch"})
        raise ValueError(f"{run}: no values of {metric!r}; logged metrics: {names}")
    steps, values = zip(*points)
    return np.array(steps, dtype=np.float64), np.array(values, dtype=np.float64)


def steps_to_reach(steps: np.ndarray, values: np.ndarray, target: float, lower_is_better: bool = True) -> float:
    """First step at which the curve reaches ``target``, interpolated linearly between the two
    logged points that bracket the crossing; ``inf`` if it never does."""
    reached = values <= target if lower_is_better else values >= target
    if not reached.any():
        return math.inf
    i = int(np.argmax(reached))
    if i == 0:
        return float(steps[0])
    s0, s1, v0, v1 = steps[i - 1], steps[i], values[i - 1], values[i]
    return float(s0 + (target - v0) / (v1 - v0) * (s1 - s0))


def speedup(baseline: tuple[np.ndarray, np.ndarray], run: tuple[np.ndarray, np.ndarray],
            lower_is_better: bool = True) -> tuple[float, float, float]:
    """(factor, baseline's last step, steps ``run`` needs to reach the baseline's final value)."""
    (a_steps, a_values), (b_steps, b_values) = baseline, run
    needed = steps_to_reach(b_steps, b_values, float(a_values[-1]), lower_is_better)
    return float(a_steps[-1]) / needed, float(a_steps[-1]), needed


def plot_convergence(runs: list[str | Path], metric: str, out: str | Path, labels: list[str] | None = None,
                     lower_is_better: bool | None = None) -> dict:
    """Curves of ``metric`` vs step for each run; the speed-up of every run over the first
    (the baseline) in the legend and the returned dict. ``lower_is_better`` None: the metric
    registry's direction for ``metric`` (``fid``, ``convergence/psnr``; lower for anything else)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [Path(r).name for r in runs]
    if lower_is_better is None:
        lower_is_better = better(metric) != "higher"
    curves = [read_curve(r, metric) for r in runs]
    result = {"metric": metric, "baseline": labels[0], "speedups": {}}
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, (steps, values)) in enumerate(zip(labels, curves)):
        text = label
        if i > 0:
            factor, last, needed = speedup(curves[0], (steps, values), lower_is_better)
            entry = {"factor": factor, "baseline_final": float(curves[0][1][-1]), "baseline_steps": last,
                     "steps_needed": needed}
            if not math.isfinite(needed):  # valid JSON: null and the reason, not Infinity / 0.0
                entry.update(factor=None, steps_needed=None,
                             reason=f"never reaches the baseline's final {metric} within {int(steps[-1])} steps")
            result["speedups"][label] = entry
            text += f" ({factor:.2f}× faster)" if math.isfinite(needed) else " (never reaches the baseline)"
        ax.plot(steps, values, marker="o", markersize=3, label=text)
    ax.axhline(curves[0][1][-1], color="gray", linestyle=":", linewidth=1)
    ax.set(xlabel="training step", ylabel=metric, title=f"{metric} vs training step")
    ax.legend()
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return result
