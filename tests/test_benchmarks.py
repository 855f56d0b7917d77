"""benchmarks/: the roofline FLOP counts equal the analytic ones, and every script's command line
parses. Nothing is timed here."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def load_roofline():
    spec = importlib.util.spec_from_file_location("roofline", BENCHMARKS / "roofline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


roofline = load_roofline()


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_linear_flops_are_two_per_multiply_add(device):
    batch, d_in, d_out = 5, 24, 40
    linear = torch.nn.Linear(d_in, d_out, device=device)
    x = torch.randn(batch, d_in, device=device, requires_grad=True)
    forward = 2 * batch * d_in * d_out  # x @ W.T (the bias add is not a matmul)
    with torch.no_grad():
        assert roofline.count_flops(lambda: linear(x)) == forward
    # backward: dx = dy @ W and dW = dy.T @ x, one forward's worth each
    assert roofline.count_flops(lambda: linear(x).sum().backward()) == 3 * forward


@pytest.mark.parametrize("groups", [1, 4, 16])  # 16: depthwise
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("transposed", [False, True])
def test_conv_flops_count_each_group_once(groups, stride, transposed):
    """Forward 2·B·(C_in/groups)·C_out·k²·(output positions), or input positions for a transposed
    conv; backward (input and weight gradients) twice that. torch's own formula counts a grouped
    conv's weight gradient ``groups`` times."""
    batch, c_in, c_out, k, side = 2, 16, 32, 3, 12
    cls = torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d
    conv = cls(c_in, c_out, k, stride=stride, padding=1, groups=groups, device="meta")
    x = torch.randn(batch, c_in, side, side, device="meta", requires_grad=True)
    out_side = conv(x).shape[-1]
    positions = side * side if transposed else out_side * out_side
    forward = 2 * batch * (c_in // groups) * c_out * k * k * positions
    with torch.no_grad():
        assert roofline.count_flops(lambda: conv(x)) == forward
    assert roofline.count_flops(lambda: conv(x).sum().backward()) == 3 * forward


def test_sdpa_flops_match_the_two_matmuls():
    batch, heads, tokens, d = 2, 3, 10, 8
    q, k, v = (torch.randn(batch, heads, tokens, d, device="meta") for _ in range(3))
    flops = roofline.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert flops == 2 * (2 * batch * heads * tokens * tokens * d)  # Q·Kᵀ and P·V


def test_fraction_and_rate_formatting():
    assert roofline.fraction(30e9, 120e9) == "25.0 %"
    assert roofline.format_rate(85.34e9) == "85.3 GFLOP/s"
    assert roofline.format_rate(61.2e12) == "61.2 TFLOP/s"
    assert roofline.achieved_cell(30e9, 0.5, 120e9) == "60.0 GFLOP/s (50.0 %)"


def test_every_benchmark_script_parses_its_command_line():
    """``--help`` of each script, run as the docstrings say (from the root, PYTHONPATH=.), all at once."""
    scripts = sorted(BENCHMARKS.glob("*.py"))
    names = {s.name for s in scripts}
    assert {"roofline.py", "train_step.py", "vae_speed.py", "na_speed.py", "restore_speed.py"} <= names
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    runs = {s.name: subprocess.Popen([sys.executable, str(s), "--help"], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in scripts}
    for name, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, f"{name} --help: {err}"
        assert out.startswith("usage:"), name


def test_quickstart_budget_trains_in_stages_and_reports_each(tmp_path):
    """The profile behind the quickstart's posterior-mean step count, at toy size: the run is
    resumed from stage to stage (2 then 3 steps) and each stage gets its own row of gains."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, str(BENCHMARKS / "quickstart_budget.py"), "--steps", "3", "2", "--draws", "2",
                          "--out", str(tmp_path)], cwd=ROOT, env=env, text=True, capture_output=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split("│")[1:-1] for line in run.stdout.splitlines() if line.startswith("│")]
    assert [r[0].strip() for r in rows] == ["2", "3"]
    assert all(abs(float(cell)) < 10 for r in rows for cell in r[2:])  # dB gains, finite
    assert "target f(y) >= LQ + 1 dB" in run.stdout
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
