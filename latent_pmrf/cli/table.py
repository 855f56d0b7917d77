"""``latent-pmrf table N``: the paper's Table N beside ours, from finished results CSVs or after
evaluating folders of outputs first (``--run LABEL=DIR``: each folder's metrics are upserted into
the part's results CSV, by default ``<out>.<part>-results.csv``, then the table is built from it)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..analysis.tables import PaperTable, build_table, paper_table, write_table


@dataclass
class EvaluationOptions:
    """What ``evaluate_folders`` needs besides the folder (see ``latent-pmrf evaluate``)."""

    gt: str | None = None
    reference: str | None = None
    fid_stats: str | None = None
    metrics: list[str] | None = None  # None: the table's metric columns of the part
    device: str = "cpu"
    batch_size: int = 8
    skip_missing: bool = False


def parse_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``["A=x", "B=y"]`` -> ``{"A": "x", "B": "y"}`` (split at the first "=")."""
    pairs: dict[str, str] = {}
    for value in values or []:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise ValueError(f"{flag} {value!r}: expected NAME=VALUE")
        pairs[name] = target
    return pairs


def part_metrics(table: PaperTable, part: str) -> list[str]:
    """The metric columns of a part that we compute (runtime / #params are not metrics)."""
    from ..metrics.registry import METRICS

    return list(dict.fromkeys(c.key for c in table.columns if c.part == part and c.key in METRICS))


def run_part(table: PaperTable, part: str, runs: dict[str, str], results_csv: Path, options: EvaluationOptions,
             console: Console) -> dict[str, str]:
    """Evaluate each ``label -> folder`` of ``runs`` and upsert its row into ``results_csv``; returns
    the unreadable files left out (named as they are met; each row's ``images`` counts its pairs)."""
    from ..metrics.evaluate import evaluate_folders
    from ..metrics.results import write_results

    metrics = options.metrics or part_metrics(table, part)
    failed: dict[str, str] = {}
    for label, folder in runs.items():
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--run {label}={folder}: not a folder")
        result = evaluate_folders(folder, options.gt, metrics=metrics, reference=options.reference,
                                  fid_stats=options.fid_stats, device=options.device, batch_size=options.batch_size,
                                  label=label, skip_missing=options.skip_missing, skip_unreadable=True, progress=False)
        write_results(result, results_csv)
        for name, reason in result.skipped.items():
            console.print(f"[yellow]skipped[/yellow] {label} {name}: {reason}")
        for reason in result.failed.values():
            console.print(f"[yellow]left out[/yellow] {label}: {reason}", soft_wrap=True)
        failed.update(result.failed)
        console.print(f"{part} {label}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.summary.items())
                      + f" ({result.meta['images']} images)")
    return failed


def make_table(number: int, out: str | Path, results: dict[str, str], runs: dict[str, dict[str, str]],
               rows: dict[str, str], options: EvaluationOptions,
               console: Console) -> tuple[str, tuple[Path, Path], dict[str, str]]:
    """Run the ``runs`` of each part, then build and write Table ``number``; returns the markdown, the
    paths and the unreadable files the evaluations left out."""
    table = paper_table(number)
    unknown = sorted((set(results) | set(runs)) - set(table.parts))
    if unknown:
        raise ValueError(f"table {number} has no {', '.join(unknown)} part; its parts: {', '.join(table.parts)}")
    out = Path(out)
    csv_of = {part: Path(path) for part, path in results.items()}
    failed: dict[str, str] = {}
    for part, part_runs in runs.items():
        csv_of.setdefault(part, out.with_name(f"{out.name}.{part}-results.csv"))
        failed.update(run_part(table, part, part_runs, csv_of[part], options, console))
    if not csv_of:
        raise ValueError(f"table {number}: give results CSVs or folders to evaluate "
                         f"(parts: {', '.join(table.parts)}; see `latent-pmrf table --help`)")
    markdown, csv_rows = build_table(number, csv_of, rows)
    return markdown, write_table(out, markdown, csv_rows), failed


def table_from_args(args: argparse.Namespace, console: Console) -> tuple[str, tuple[Path, Path], dict[str, str]]:
    """``latent-pmrf table`` arguments -> ``make_table``. ``--results`` / ``--run`` name the part of a
    one-part table (Table 4); Tables 1-3 take ``--reconstruction-*`` / ``--restoration-*``."""
    table = paper_table(args.number)
    results = {part: getattr(args, f"{part}_results") for part in table.parts if getattr(args, f"{part}_results")}
    runs = {part: parse_pairs(getattr(args, f"{part}_run"), f"--{part}-run") for part in table.parts}
    if args.results or args.run:
        if len(table.parts) > 1:
            raise ValueError(f"table {args.number} has {' and '.join(table.parts)} parts: use "
                             f"--{table.parts[0]}-results / --{table.parts[-1]}-results (and -run) instead of "
                             "--results / --run")
        (part,) = table.parts
        if args.results:
            results[part] = args.results
        runs[part] = {**runs[part], **parse_pairs(args.run, "--run")}
    options = EvaluationOptions(gt=args.gt, reference=args.reference, fid_stats=args.fid_stats,
                                metrics=[m.strip() for m in args.metrics.split(",")] if args.metrics else None,
                                device=args.device, batch_size=args.batch_size, skip_missing=args.skip_missing)
    out = Path(args.out)
    out = out.with_suffix("") if out.suffix in (".md", ".csv") else out
    return make_table(args.number, out, results, {p: r for p, r in runs.items() if r},
                      parse_pairs(args.row, "--row"), options, console)
