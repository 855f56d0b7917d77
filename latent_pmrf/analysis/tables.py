"""The paper's Tables 1-4 beside our numbers (``latent-pmrf table``).

The published numbers live in ``paper_tables.yaml`` (validated on load); ours come from results
CSVs written by ``latent-pmrf evaluate`` (one row per method, column ``method``), one CSV per part
of a table: Tables 1-3 have a reconstruction part (the VAE alone) and a restoration part
(Latent-PMRF trained on it), Table 4 only restoration.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..atomic import write_text_atomic

DATA_FILE = Path(__file__).with_name("paper_tables.yaml")
PARTS = ("reconstruction", "restoration")
ARROWS = {"higher": " ↑", "lower": " ↓", None: ""}
MISSING = "–"  # markdown cell of a number we have not computed


@dataclass(frozen=True)
class Column:
    key: str  # our metric name, e.g. "fd_dinov2" for the paper's FID_DINOv2
    header: str  # the paper's header
    part: str  # "reconstruction" | "restoration"
    digits: int | None  # printed decimals; None: a text column kept as printed ("159.8 + 15.7")
    source: str | None = None  # where the metric variant was read off the official code

    @property
    def better(self) -> str | None:
        """Which way is better ("higher" / "lower"), from the metric registry; None (no arrow) for a
        column that is no metric (runtime_s, params_m)."""
        from ..metrics.registry import better

        return better(self.key)

    def format(self, value: float | str) -> str:
        if self.digits is None:
            return str(value)
        try:
            return f"{float(value):.{self.digits}f}"
        except ValueError:
            return str(value)


@dataclass(frozen=True)
class PaperTable:
    number: int
    caption: str
    section: str
    row_header: str
    na: str  # how the paper prints an unavailable cell ("N/A" in Table 2, blank in Table 4)
    columns: tuple[Column, ...]
    rows: dict[str, tuple[float | str | None, ...]]  # paper row name -> values in column order

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in PARTS if any(c.part == p for c in self.columns))

    def column_name(self, column: Column) -> str:
        return f"{column.part} {column.key}" if len(self.parts) > 1 else column.key

    def paper_cell(self, row: str, index: int) -> str:
        value = self.rows[row][index]
        return self.na if value is None else self.columns[index].format(value)


def _get(mapping: object, key: str, types: type | tuple[type, ...], where: str, path: Path, optional=False):
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: {where} must be a mapping, got {type(mapping).__name__}")
    if key not in mapping:
        raise ValueError(f"{path}: {where}.{key} is missing")
    value = mapping[key]
    if not (isinstance(value, types) or (optional and value is None)) or isinstance(value, bool):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise ValueError(f"{path}: {where}.{key} must be {names}{' or null' if optional else ''}, got {value!r}")
    return value


def _column(raw: object, where: str, path: Path) -> Column:
    column = Column(key=_get(raw, "key", str, where, path), header=_get(raw, "header", str, where, path),
                    part=_get(raw, "part", str, where, path), digits=_get(raw, "digits", int, where, path, True),
                    source=_get(raw, "source", str, where, path, True) if "source" in raw else None)
    unknown = sorted(set(raw) - {"key", "header", "part", "digits", "source"})
    if unknown:
        raise ValueError(f"{path}: {where} has unknown key(s) {', '.join(unknown)} (a column's arrow comes from "
                         "the metric registry)")
    if column.part not in PARTS:
        raise ValueError(f"{path}: {where}.part must be one of {', '.join(PARTS)}, got {column.part!r}")
    return column


def _row(name: object, values: object, columns: tuple[Column, ...], where: str, path: Path) -> tuple:
    if not isinstance(name, str):
        raise ValueError(f"{path}: {where}: row names must be strings (quote numbers), got {name!r}")
    if not isinstance(values, list) or len(values) != len(columns):
        raise ValueError(f"{path}: {where}[{name!r}] must be a list of {len(columns)} values (one per column), "
                         f"got {values!r}")
    for column, value in zip(columns, values):
        expected = str if column.digits is None else (int, float)
        if value is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            raise ValueError(f"{path}: {where}[{name!r}] column {column.part} {column.key}: expected "
                             f"{'a printed string' if column.digits is None else 'a number'} or null, got {value!r}")
    return tuple(values)


def load_paper_tables(path: str | Path = DATA_FILE) -> dict[int, PaperTable]:
    """All tables of the data file by number; a malformed entry is an error naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paper tables data file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw_tables = _get(data, "tables", list, "(top level)", path)
    tables: dict[int, PaperTable] = {}
    for i, raw in enumerate(raw_tables):
        where = f"tables[{i}]"
        number = _get(raw, "number", int, where, path)
        raw_columns = _get(raw, "columns", list, where, path)
        if not raw_columns:
            raise ValueError(f"{path}: {where}.columns is empty")
        columns = tuple(_column(c, f"{where}.columns[{j}]", path) for j, c in enumerate(raw_columns))
        raw_rows = _get(raw, "rows", dict, where, path)
        if number in tables:
            raise ValueError(f"{path}: {where}.number {number} appears twice")
        tables[number] = PaperTable(
            number=number, caption=_get(raw, "caption", str, where, path), section=_get(raw, "section", str, where, path),
            row_header=_get(raw, "row_header", str, where, path), na=_get(raw, "na", str, where, path),
            columns=columns, rows={name: _row(name, v, columns, f"{where}.rows", path) for name, v in raw_rows.items()})
    return tables


def paper_table(number: int, path: str | Path = DATA_FILE) -> PaperTable:
    tables = load_paper_tables(path)
    if number not in tables:
        raise ValueError(f"{path}: no table {number}; tables: {', '.join(map(str, sorted(tables)))}")
    return tables[number]


def read_results(path: str | Path) -> dict[str, dict[str, str]]:
    """Rows of a results CSV (``latent-pmrf evaluate``) by their ``method`` label. A column of a
    retired metric name (``lpips``, written before LPIPS named its net) is an error saying which
    names replace it, never read as one of them."""
    from ..metrics.registry import RETIRED

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results CSV not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "method" not in columns:
            raise ValueError(f"{path}: no 'method' column (columns: {', '.join(columns)})")
        retired = [c for c in columns if c in RETIRED]
        if retired:
            raise ValueError(f"{path}: column {RETIRED[retired[0]]}; rename the column to the net that produced "
                             "it, or re-run `latent-pmrf evaluate`")
        return {row["method"]: row for row in reader}


def build_table(number: int, results: dict[str, Path], rows: dict[str, str] | None = None,
                data_file: str | Path = DATA_FILE) -> tuple[str, list[dict[str, str]]]:
    """Markdown and CSV rows of paper Table ``number`` with ours beside each published value.

    ``results``: part ("reconstruction" / "restoration") -> results CSV. ``rows``: paper row ->
    our ``method`` label where they differ (default: the same name). Our rows that no paper row
    maps to are appended with empty paper cells. Paper cells are as printed (unavailable ones too);
    a value of ours that is missing is empty in the CSV and "–" in the markdown.
    """
    table = paper_table(number, data_file)
    unknown_parts = sorted(set(results) - set(table.parts))
    if unknown_parts:
        raise ValueError(f"table {number} has no part {', '.join(unknown_parts)}; its parts: {', '.join(table.parts)}")
    mapping = dict(rows or {})
    unknown_rows = [r for r in mapping if r not in table.rows]
    if unknown_rows:
        raise ValueError(f"table {number} has no row {', '.join(map(repr, unknown_rows))}; "
                         f"its rows: {', '.join(map(repr, table.rows))}")
    label_of = {name: mapping.get(name, name) for name in table.rows}
    ours = {part: read_results(path) for part, path in results.items()}
    extra = dict.fromkeys(label for part in table.parts for label in ours.get(part, {})
                          if label not in label_of.values())
    lines = [(name, True) for name in table.rows] + [(label, False) for label in extra]  # (name, in paper)

    def our_value(label: str, column: Column) -> str:
        return ours.get(column.part, {}).get(label, {}).get(column.key) or ""

    csv_rows, md_rows = [], []
    for name, in_paper in lines:
        label = label_of[name] if in_paper else name
        csv_row = {"row": name if in_paper else "", "our_label": label}
        cells = [name if label == name else f"{name} (ours: {label})"]
        for i, column in enumerate(table.columns):
            paper = table.paper_cell(name, i) if in_paper else ""
            value = our_value(label, column)
            csv_row[f"{table.column_name(column)} (paper)"] = paper
            csv_row[f"{table.column_name(column)} (ours)"] = value
            cells += [paper, column.format(value) if value else MISSING]
        csv_rows.append(csv_row)
        md_rows.append(cells)

    header = [table.row_header] + [f"{table.column_name(c)}{ARROWS[c.better]} ({who})"
                                   for c in table.columns for who in ("paper", "ours")]
    markdown = "\n".join([
        f"**Table {table.number}**: {table.caption} (paper Sec. {table.section}; ours beside each published value)",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        *("| " + " | ".join(cells) + " |" for cells in md_rows),
        "",
        "Ours from: " + (", ".join(f"{part} = {results[part]}" for part in table.parts if part in results) or "nothing"),
    ]) + "\n"
    return markdown, csv_rows


def write_table(out: str | Path, markdown: str, csv_rows: list[dict[str, str]]) -> tuple[Path, Path]:
    """Write ``<out>.md`` and ``<out>.csv`` atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(csv_rows[0]) if csv_rows else ["row"])
    writer.writeheader()
    writer.writerows(csv_rows)
    md_path, csv_path = out.with_name(out.name + ".md"), out.with_name(out.name + ".csv")
    write_text_atomic(md_path, markdown)
    write_text_atomic(csv_path, buf.getvalue())
    return md_path, csv_path
