"""The perception-distortion plane (Blau & Michaeli 2018): methods / checkpoints / step counts as
labelled points and the Pareto front; which way each axis is better comes from the metric registry
(a column that is no metric: lower)."""

from __future__ import annotations

import csv
from collections.abc import Collection
from pathlib import Path

import numpy as np

from ..metrics.registry import HIGHER_IS_BETTER, better  # noqa: F401 (HIGHER_IS_BETTER: imported from here too)


def pareto_front(x: np.ndarray, y: np.ndarray, x_lower_better: bool = True, y_lower_better: bool = True) -> np.ndarray:
    """Indices of the non-dominated points, sorted by x (a point is dominated when another is at
    least as good on both axes and strictly better on one)."""
    sx = np.asarray(x, np.float64) * (1 if x_lower_better else -1)
    sy = np.asarray(y, np.float64) * (1 if y_lower_better else -1)
    order = np.lexsort((sy, sx))  # by x, then y
    front, best_y = [], np.inf
    for i in order:
        if sy[i] < best_y:
            front.append(i)
            best_y = sy[i]
    return np.array(front, dtype=int)


def plot_pd(results_csv: str | Path, x: str, y: str, out: str | Path, label: str = "method",
            references: Collection[str] = ()) -> dict:
    """Scatter ``x`` vs ``y`` from a results CSV (one row per method/checkpoint/step count, a
    ``label`` column naming it) and draw the Pareto front. Rows labelled in ``references`` are
    reference points, not methods (e.g. the VAE's reconstruction of the ground truth): drawn hollow,
    never on the front. Returns a JSON-safe dict: the labels on the front, every plotted point
    (references included), and the rows left out (a missing or non-finite value) with why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Path(results_csv).open() as f:
        rows = list(csv.DictReader(f))
    for key in (x, y, label):
        if not rows or key not in rows[0]:
            raise ValueError(f"{results_csv}: no column {key!r}; columns: {sorted(rows[0]) if rows else []}")
    def value(text: str) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return float("nan")

    skipped = {r[label]: f"{x}={r[x]!r}, {y}={r[y]!r}: not a finite number"
               for r in rows if not (np.isfinite(value(r[x])) and np.isfinite(value(r[y])))}
    rows = [r for r in rows if r[label] not in skipped]
    if not rows:
        raise ValueError(f"{results_csv}: no row has finite {x} and {y} ({skipped})")
    xs = np.array([value(r[x]) for r in rows])
    ys = np.array([value(r[y]) for r in rows])
    names = [r[label] for r in rows]
    is_method = np.array([name not in references for name in names])
    methods = np.flatnonzero(is_method)
    front = methods[pareto_front(xs[methods], ys[methods], better(x) != "higher", better(y) != "higher")]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(xs[is_method], ys[is_method], s=18)
    if not is_method.all():
        ax.scatter(xs[~is_method], ys[~is_method], s=18, facecolors="none", edgecolors="gray", label="reference")
    for xi, yi, name in zip(xs, ys, names):
        ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.step(xs[front], ys[front], where="post", color="tab:red", linewidth=1, label="Pareto front")
    ax.set(xlabel=f"{x} ({better(x) or 'lower'} is better)", ylabel=f"{y} ({better(y) or 'lower'} is better)",
           title="perception-distortion plane")
    ax.legend()
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return {"x": x, "y": y, "front": [names[i] for i in front],
            "points": {n: {x: float(a), y: float(b)} for n, a, b in zip(names, xs, ys)}, "skipped": skipped}
