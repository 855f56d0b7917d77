"""Writing evaluation results: ``results.csv`` keeps one row per method / checkpoint / step count
(column ``method``; a new evaluation with the same label replaces its row), so several
``evaluate`` runs build the table that ``plot-pd`` and ``table`` read. Next to it:
``<stem>.<label>.per_image.csv`` (every image's values), ``<stem>.json`` (all rows, per-image
values, skipped metrics with reasons) and ``<stem>.md`` (the markdown table). Every write is atomic.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from ..atomic import write_text_atomic
from .evaluate import EvaluationResult
from .registry import better


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def markdown_table(rows: list[dict], metrics: list[str], label: str = "method", digits: int = 4) -> str:
    arrows = {m: "↑" if better(m) == "higher" else "↓" for m in metrics}
    lines = [f"| {label} | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |",
             "|---|" + "---:|" * len(metrics)]
    for row in rows:
        cells = []
        for m in metrics:
            value = row.get(m, "")
            cells.append(f"{float(value):.{digits}f}" if value not in ("", None) else "–")
        lines.append(f"| {row[label]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(result: EvaluationResult, out_csv: str | Path) -> dict[str, Path]:
    """Upsert ``result`` into ``out_csv`` and write the per-image CSV, JSON and markdown beside it."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    row = {"method": result.label, **{k: f"{v:.6g}" if isinstance(v, float) else v for k, v in result.summary.items()},
           "images": result.meta.get("images", "")}
    rows = [r for r in read_rows(out_csv) if r["method"] != result.label] + [row]
    metric_cols: list[str] = []
    for r in rows:
        metric_cols += [k for k in r if k not in ("method", "images") and k not in metric_cols]
    write_text_atomic(out_csv, _csv_text(rows, ["method", *metric_cols, "images"]))

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", result.label)
    per_image = out_csv.with_name(f"{out_csv.stem}.{safe}.per_image.csv")
    image_cols = ["file", *[k for k in (result.per_image[0] if result.per_image else {}) if k != "file"]]
    write_text_atomic(per_image, _csv_text(result.per_image, image_cols))

    json_path = out_csv.with_suffix(".json")
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {}
    previous[result.label] = {"summary": result.summary, "skipped": result.skipped, "meta": result.meta,
                              "per_image_csv": per_image.name}
    write_text_atomic(json_path, json.dumps(previous, indent=2))

    md_path = out_csv.with_suffix(".md")
    md = markdown_table(rows, metric_cols)
    skipped = {name: reason for entry in previous.values() for name, reason in entry["skipped"].items()}
    if skipped:
        md += "\nSkipped:\n" + "".join(f"- {name}: {reason}\n" for name, reason in skipped.items())
    write_text_atomic(md_path, md)
    return {"csv": out_csv, "per_image": per_image, "json": json_path, "markdown": md_path}
