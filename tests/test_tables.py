"""``latent-pmrf table``: the data file against the paper text, the side-by-side table, the command
end to end on real photos."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from latent_pmrf.analysis.pareto import HIGHER_IS_BETTER
from latent_pmrf.analysis.tables import DATA_FILE, build_table, load_paper_tables, write_table
from latent_pmrf.cli.main import main

PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "papers" / "latent_pmrf_paper.txt"
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def paper_table_rows(number: int) -> list[list[str]]:
    """The tab-separated rows of paper Table ``number``, header rows first, as printed (first cell
    the row name; underline / bold markers removed)."""
    if not PAPER.is_file():
        pytest.skip(f"paper text not found at {PAPER}")
    lines = PAPER.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}:"))
    block = []
    for line in lines[start + 1:]:
        if "\t" in line:
            block.append(line)
        elif block:
            break
    return [[re.sub(r"</?u>|\*\*", "", c).strip() for c in line.split("\t")] for line in block]


def holds_numbers(cells: list[str]) -> bool:
    return any(NUMBER.match(c) or c == "N/A" for c in cells[1:])


def paper_table_cells(number: int) -> list[list[str]]:
    """The rows of paper Table ``number`` that hold numbers or N/A."""
    return [cells for cells in paper_table_rows(number) if holds_numbers(cells)]


def paper_arrows(number: int) -> list[str | None]:
    """The arrow printed over each column of paper Table ``number``: "higher" / "lower" / None. The
    header rows are merged cell by cell (Table 1 prints some arrows on its second header row)."""
    rows = paper_table_rows(number)
    header = [cells[1:] for cells in rows[:next(i for i, cells in enumerate(rows) if holds_numbers(cells))]]
    merged = [" ".join(cells[j] for cells in header if j < len(cells)) for j in range(max(map(len, header)))]
    return ["higher" if "\\uparrow" in cell else "lower" if "\\downarrow" in cell else None for cell in merged]


@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_data_file_matches_the_paper_text(number):
    printed = paper_table_cells(number)
    table = load_paper_tables()[number]
    assert [cells[0] for cells in printed] == list(table.rows)
    for cells in printed:
        name, values = cells[0], cells[1:] + [""] * (len(table.columns) + 1 - len(cells))
        assert len(values) == len(table.columns), name
        for column, text, stored in zip(table.columns, values, table.rows[name]):
            if text in ("N/A", ""):
                assert stored is None, (name, column.key)
            elif column.digits is None:
                assert stored == text, (name, column.key)
            else:
                assert stored == float(text) and f"{stored:.{column.digits}f}" == text, (name, column.key, text)


@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_data_file_columns_are_known_metrics_with_the_paper_arrows(number):
    from latent_pmrf.metrics.registry import METRICS

    table = load_paper_tables()[number]
    for column in table.columns:
        if column.key in ("runtime_s", "params_m"):
            assert column.better is None
            continue
        assert column.key in METRICS, (table.number, column.key)
        assert column.better == ("higher" if column.key in HIGHER_IS_BETTER else "lower"), column
    # the registry's directions (the arrows printed here) are the ones the paper prints
    assert [c.better for c in table.columns] == paper_arrows(number)


def test_lpips_columns_name_the_net_their_source_used():
    """Every table's LPIPS comes from the official evaluation's pyiqa.create_metric('lpips'), whose
    default net is AlexNet: lpips_alex, with a source note; Table 4's metrics are the registry's."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    assert DEFAULT_CONFIGS["lpips"]["metric_opts"]["net"] == "alex"
    tables = load_paper_tables()
    lpips_columns = [(t.number, c) for t in tables.values() for c in t.columns if c.header == "LPIPS"]
    assert len(lpips_columns) == 7  # Tables 1-3: reconstruction + restoration; Table 4: restoration
    for number, column in lpips_columns:
        assert column.key == "lpips_alex", (number, column.part)
        assert column.source and "pyiqa 'lpips' (AlexNet)" in column.source, (number, column.part)
    assert "test_pmrf.sh" in next(c.source for n, c in lpips_columns if n == 4)  # PMRF's row: the authors' script
    assert tuple(c.key for c in tables[4].columns if c.key not in ("runtime_s", "params_m")) == (
        "psnr", "ms_ssim", "lpips_alex", "dists", "deg", "lmd", "musiq", "qalign", "fid", "fd_dinov2", "mmd_dinov2")


def test_malformed_data_file_names_the_file_and_key(tmp_path):
    text = DATA_FILE.read_text(encoding="utf-8").replace("header: PSNR, part: restoration, digits: 4}",
                                                         "header: PSNR, part: restore, digits: 4}", 1)
    bad = tmp_path / "paper_tables.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"paper_tables\.yaml: tables\[1\]\.columns\[3\]\.part"):
        load_paper_tables(bad)
    bad.write_text("tables:\n  - number: 9\n    caption: x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tables\[0\]\.columns is missing"):
        load_paper_tables(bad)
    bad.write_text(DATA_FILE.read_text(encoding="utf-8").replace("header: PSNR,", "header: PSNR, better: higher,", 1),
                   encoding="utf-8")
    with pytest.raises(ValueError, match=r"tables\[0\]\.columns\[0\] has unknown key\(s\) better"):
        load_paper_tables(bad)


def test_build_table_puts_ours_beside_the_paper(tmp_path):
    restoration = tmp_path / "restoration.csv"
    restoration.write_text("method,psnr,lpips_alex,mmd_dinov2,images\n"
                           "my_c32,26.5,0.25,,3\nnew_vae,24.0,0.3,1.2,3\n")
    reconstruction = tmp_path / "reconstruction.csv"
    reconstruction.write_text("method,psnr,lpips_vgg,lpips_alex,mmd_dinov2\n"
                              "SD-VAE f8c32,40.1,0.0222,0.0151,0.1\n")
    markdown, rows = build_table(1, {"reconstruction": reconstruction, "restoration": restoration},
                                 {"Sim-VAE f8c32": "my_c32"})
    by_row = {r["row"] or r["our_label"]: r for r in rows}
    assert list(by_row) == ["SD1.5-VAE f8c4", "SD-XL-VAE f8c4", "FLUX-VAE f8c16", "SD-VAE f8c32", "Sim-VAE f8c16",
                            "Sim-VAE f8c32", "new_vae"]
    sim = by_row["Sim-VAE f8c32"]
    assert sim["our_label"] == "my_c32"
    assert sim["restoration psnr (paper)"] == "26.382" and sim["restoration psnr (ours)"] == "26.5"
    assert sim["restoration mmd_dinov2 (paper)"] == "0.8770" and sim["restoration mmd_dinov2 (ours)"] == ""
    assert sim["reconstruction psnr (ours)"] == ""
    assert by_row["SD-VAE f8c32"]["reconstruction lpips_alex (ours)"] == "0.0151"  # AlexNet, not the VGG value
    assert by_row["new_vae"]["restoration psnr (paper)"] == "" and by_row["new_vae"]["restoration psnr (ours)"] == "24.0"
    assert "| Sim-VAE f8c32 (ours: my_c32) | 42.713 | – | 0.007 | – | 0.0511 | – | 26.382 | 26.500 | 0.224 | 0.250 " \
           "| 0.8770 | – |" in markdown
    assert "| new_vae |  | – |  | – |  | – |  | 24.000 |" in markdown

    md_path, csv_path = write_table(tmp_path / "out" / "table1", markdown, rows)
    assert md_path.read_text() == markdown
    with csv_path.open(newline="") as f:
        assert list(csv.DictReader(f)) == rows

    markdown, _ = build_table(2, {"restoration": restoration})
    assert "| - 3×3 conv | N/A | – | N/A | – |" in markdown
    with pytest.raises(ValueError, match="no row 'Sim-VAE f8c64'"):
        build_table(1, {"restoration": restoration}, {"Sim-VAE f8c64": "x"})
    with pytest.raises(ValueError, match="no part reconstruction"):
        build_table(4, {"reconstruction": restoration})


def test_results_with_a_bare_lpips_column_are_an_error_naming_both_nets(tmp_path, capsys):
    old = tmp_path / "old.csv"
    old.write_text("method,psnr,lpips\nLatent-PMRF,26.4,0.22\n")
    with pytest.raises(ValueError, match=r"old\.csv: column 'lpips' is ambiguous: use lpips_alex .* or lpips_vgg"):
        build_table(4, {"restoration": old})
    with pytest.raises(SystemExit) as exit_:
        main(["table", "4", "--results", str(old), "--out", str(tmp_path / "table4")])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "'lpips' is ambiguous" in err and "lpips_alex" in err and "lpips_vgg" in err
    assert not (tmp_path / "table4.md").exists()


def test_table_command_evaluates_then_tabulates(faces_dir, tmp_path, capsys):
    import cv2

    pred = tmp_path / "blur"
    pred.mkdir()
    expected = []
    for path in sorted((faces_dir / "hq").glob("*.png"))[:3]:
        gt = cv2.imread(str(path))
        blurred = cv2.GaussianBlur(gt, (0, 0), 2.0)
        cv2.imwrite(str(pred / path.name), blurred)
        mse = np.mean((gt.astype(np.float64) - blurred.astype(np.float64)) ** 2)
        expected.append(10 * np.log10(255.0**2 / mse))

    out = tmp_path / "tables" / "table4"
    main(["table", "4", "--run", f"blur={pred}", "--gt", str(faces_dir / "hq"), "--metrics", "psnr,ms_ssim",
          "--out", str(out), "--device", "cpu"])
    markdown = capsys.readouterr().out
    with (tmp_path / "tables" / "table4.csv").open(newline="") as f:
        rows = {r["row"] or r["our_label"]: r for r in csv.DictReader(f)}
    ours = float(rows["blur"]["psnr (ours)"])
    assert ours == pytest.approx(np.mean(expected), abs=1e-3)
    assert 0 < float(rows["blur"]["ms_ssim (ours)"]) < 1
    assert "26.3887" in markdown and f"| blur |  | {ours:.4f} |" in markdown
    assert (tmp_path / "tables" / "table4.md").read_text() == markdown
    assert (tmp_path / "tables" / "table4.restoration-results.csv").is_file()


def test_table_command_leaves_out_an_unreadable_output_names_it_and_exits_3(faces_dir, tmp_path, capsys):
    """As `evaluate` does: the row covers the readable pairs (its images column says how many)."""
    import cv2

    pred = tmp_path / "blur"
    pred.mkdir()
    expected = []
    paths = sorted((faces_dir / "hq").glob("*.png"))[:3]
    for path in paths:
        gt = cv2.imread(str(path))
        blurred = cv2.GaussianBlur(gt, (0, 0), 2.0)
        cv2.imwrite(str(pred / path.name), blurred)
        mse = np.mean((gt.astype(np.float64) - blurred.astype(np.float64)) ** 2)
        expected.append(10 * np.log10(255.0**2 / mse))
    broken = pred / paths[1].name
    broken.write_bytes(b"\x89PNG truncated")
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for path in paths:
        (gt_dir / path.name).write_bytes(path.read_bytes())

    out = tmp_path / "tables" / "table4"
    with pytest.raises(SystemExit) as exit_:
        main(["table", "4", "--run", f"blur={pred}", "--gt", str(gt_dir), "--metrics", "psnr", "--out", str(out),
              "--device", "cpu"])
    assert exit_.value.code == 3
    printed = capsys.readouterr()
    assert str(broken) in " ".join((printed.out + printed.err).split())
    with (tmp_path / "tables" / "table4.csv").open(newline="") as f:
        rows = {r["row"] or r["our_label"]: r for r in csv.DictReader(f)}
    assert float(rows["blur"]["psnr (ours)"]) == pytest.approx(np.mean([expected[0], expected[2]]), abs=1e-3)
    with (tmp_path / "tables" / "table4.restoration-results.csv").open(newline="") as f:
        assert next(csv.DictReader(f))["images"] == "2"
