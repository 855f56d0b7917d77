"""Convergence speed-up (the paper's 5.79x style claim) and the PD Pareto front, on synthetic data."""

import itertools
import math

import numpy as np
import pytest

from latent_pmrf.analysis.convergence import read_curve, speedup, steps_to_reach
from latent_pmrf.analysis.pareto import pareto_front
from latent_pmrf.cli.main import main


def test_steps_to_reach_interpolates_the_first_crossing():
    steps, values = np.array([0.0, 10, 20, 30]), np.array([10.0, 6, 2, 5])
    assert steps_to_reach(steps, values, 4.0) == pytest.approx(15.0)
    assert steps_to_reach(steps, values, 12.0) == 0.0
    assert steps_to_reach(steps, values, 1.0) == math.inf
    assert steps_to_reach(steps, -values, -4.0, lower_is_better=False) == pytest.approx(15.0)


def test_speedup_is_baseline_steps_over_steps_needed():
    baseline = (np.array([0.0, 50, 100]), np.array([40.0, 20, 10]))  # final FID 10 at step 100
    fast = (np.array([0.0, 10, 20, 40]), np.array([30.0, 15, 8, 6]))  # reaches 10 at 10 + 5/7 * 10
    factor, last, needed = speedup(baseline, fast)
    assert last == 100 and needed == pytest.approx(10 + 10 * 5 / 7)
    assert factor == pytest.approx(100 / needed)


def write_run(root, rows):
    path = root / "csv" / "version_0"
    path.mkdir(parents=True)
    lines = ["step,val/fid,train/loss"] + [f"{s},{v}," for s, v in rows] + ["5,,0.3"]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")
    return root


def test_read_curve_and_plot_convergence_cli(tmp_path):
    a = write_run(tmp_path / "pmrf", [(100, 10.0), (0, 40.0), (50, 20.0)])
    b = write_run(tmp_path / "latent", [(0, 30.0), (10, 15.0), (20, 8.0)])
    steps, values = read_curve(a, "val/fid")
    assert steps.tolist() == [0, 50, 100] and values.tolist() == [40, 20, 10]
    with pytest.raises(ValueError, match="train/loss"):
        read_curve(a, "val/dists")
    main(["plot-convergence", str(a), str(b), "--metric", "val/fid", "--out", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_pareto_front_matches_brute_force_dominance():
    rng = np.random.default_rng(0)
    x, y = rng.random(40), rng.random(40)
    dominated = {i for i, j in itertools.permutations(range(40), 2)
                 if x[j] <= x[i] and y[j] <= y[i] and (x[j] < x[i] or y[j] < y[i])}
    assert set(pareto_front(x, y).tolist()) == set(range(40)) - dominated
    # higher-is-better x (PSNR): flip the comparison
    front = set(pareto_front(x, y, x_lower_better=False).tolist())
    dominated = {i for i, j in itertools.permutations(range(40), 2)
                 if x[j] >= x[i] and y[j] <= y[i] and (x[j] > x[i] or y[j] < y[i])}
    assert front == set(range(40)) - dominated


def test_plot_pd_cli(tmp_path, capsys):
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("method,psnr,fid\nA,26.0,40\nB,25.0,30\nC,24.0,35\nD,27.0,50\n")
    main(["plot-pd", str(csv_path), "--x", "psnr", "--y", "fid", "--out", str(tmp_path / "pd.png")])
    assert (tmp_path / "pd.png").stat().st_size > 1000
    out = capsys.readouterr().err
    assert "C" not in out.split("Pareto front:")[1].split("\n")[0]  # C is dominated by B


def test_plot_pd_reference_rows_are_drawn_but_never_on_the_front(tmp_path, capsys):
    import json

    csv_path = tmp_path / "results.csv"
    # "vae_of_gt" dominates every method, and C is dominated by B alone
    csv_path.write_text("method,psnr,fid\nA,26.0,40\nB,25.0,30\nC,24.0,35\nvae_of_gt,28.0,20\n")
    main(["plot-pd", str(csv_path), "--x", "psnr", "--y", "fid", "--out", str(tmp_path / "pd.png"),
          "--reference", "vae_of_gt"])
    data = json.loads(capsys.readouterr().out)
    assert set(data["front"]) == {"A", "B"} and "vae_of_gt" in data["points"]
    main(["plot-pd", str(csv_path), "--x", "psnr", "--y", "fid", "--out", str(tmp_path / "pd.png")])
    assert json.loads(capsys.readouterr().out)["front"] == ["vae_of_gt"]


def test_json_outputs_are_valid_json_with_reasons(tmp_path, capsys):
    """Issue 17: 'never reached' and non-finite values are null with a reason, never Infinity / NaN."""
    import json

    a = write_run(tmp_path / "base", [(0, 40.0), (50, 20.0), (100, 10.0)])
    b = write_run(tmp_path / "slow", [(0, 45.0), (50, 35.0), (100, 30.0)])  # never reaches 10
    main(["plot-convergence", str(a), str(b), "--metric", "val/fid", "--out", str(tmp_path / "c.png")])
    text = capsys.readouterr().out
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    entry = data["speedups"]["slow"]
    assert entry["factor"] is None and entry["steps_needed"] is None and "never reaches" in entry["reason"]

    csv_path = tmp_path / "results.csv"
    csv_path.write_text("method,psnr,fid\nA,26.0,40\nB,25.0,nan\nC,24.0,\nD,27.0,50\n")
    main(["plot-pd", str(csv_path), "--x", "psnr", "--y", "fid", "--out", str(tmp_path / "pd.png")])
    data = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(data["points"]) == {"A", "D"} and set(data["skipped"]) == {"B", "C"}
    assert set(data["front"]) == {"A", "D"}
