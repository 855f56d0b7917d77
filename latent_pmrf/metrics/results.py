"""Writing evaluation results: ``results.csv`` keeps one row per method / checkpoint / step count
(column ``method``; a new evaluation with the same label merges its metrics into that row: new
values replace the same metrics, the others are kept; a different protocol or image count for an
existing label is refused, naming it), so several ``evaluate`` runs build the table that
``plot-pd`` and ``table`` read. Next to it:
``<stem>.<label>.per_image.csv`` (every image's values), ``<stem>.json`` (all rows, per-image
values, skipped metrics with reasons) and ``<stem>.md`` (the markdown table). Every write is atomic.
Each row names its ``protocol`` (``evaluate.PROTOCOLS``): ``psnr`` of the SIRR protocol and of the
default one are computed differently.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

from ..atomic import write_text_atomic
from .evaluate import EvaluationResult
from .registry import better

ROW_INFO = ("protocol", "images")  # columns after the metrics: how they were computed, on how many images


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _json_safe(value):
    """NaN / inf (a metric that could not be computed) become null: the file stays valid JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
           "protocol": result.meta.get("protocol", ""), "images": result.meta.get("images", "")}
    old_rows = read_rows(out_csv)
    old = next((r for r in old_rows if r["method"] == result.label), None)
    if old is not None:
        for key in ROW_INFO:
            if old.get(key, "") not in ("", str(row[key])):
                raise ValueError(f"{out_csv}: row {result.label!r} was computed with {key} {old[key]}, this "
                                 f"evaluation with {row[key]}; use another --label")
        row = {**{k: v for k, v in old.items() if v not in ("", None)}, **row}
    rows = [r for r in old_rows if r["method"] != result.label] + [row]
    metric_cols: list[str] = []
    for r in rows:
        metric_cols += [k for k in r if k not in ("method", *ROW_INFO) and k not in metric_cols]
    write_text_atomic(out_csv, _csv_text(rows, ["method", *metric_cols, *ROW_INFO]))

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", result.label)
    per_image = out_csv.with_name(f"{out_csv.stem}.{safe}.per_image.csv")
    by_file = {r["file"]: dict(r) for r in read_rows(per_image)} if old is not None else {}
    for r in result.per_image:
        by_file[r["file"]] = {**by_file.get(r["file"], {}), **r}
    image_rows = list(by_file.values())
    image_cols = ["file", *dict.fromkeys(k for r in image_rows for k in r if k != "file")]
    write_text_atomic(per_image, _csv_text(image_rows, image_cols))

    json_path = out_csv.with_suffix(".json")
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {}
    entry = previous.get(result.label, {"summary": {}, "skipped": {}})
    summary = {**entry["summary"], **result.summary}
    skipped = {**{k: v for k, v in entry["skipped"].items() if k not in result.summary}, **result.skipped}
    previous[result.label] = {"summary": summary, "skipped": skipped, "meta": result.meta,
                              "per_image_csv": per_image.name}
    write_text_atomic(json_path, json.dumps(_json_safe(previous), indent=2, allow_nan=False))

    md_path = out_csv.with_suffix(".md")
    md = markdown_table(rows, metric_cols)
    skipped = {name: reason for entry in previous.values() for name, reason in entry["skipped"].items()}
    if skipped:
        md += "\nSkipped:\n" + "".join(f"- {name}: {reason}\n" for name, reason in skipped.items())
    write_text_atomic(md_path, md)
    return {"csv": out_csv, "per_image": per_image, "json": json_path, "markdown": md_path}
