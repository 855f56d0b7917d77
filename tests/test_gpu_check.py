"""benchmarks/gpu_check.py: the prepared run for a lent GPU machine. Its CUDA behaviour can only be
seen there; here its plumbing is: every step at toy sizes on the CPU, skip and time-limit logic,
the pins it builds wheels from."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(gpu_check)


def test_plan_is_ordered_by_dependency_and_runs_on_the_device(tmp_path):
    steps = gpu_check.plan("cuda", smoke=False, work=tmp_path)
    names = [s.name for s in steps]
    assert len(set(names)) == len(names)
    for i, step in enumerate(steps):
        assert set(step.needs) <= set(names[:i]), f"{step.name} needs a later or unknown step"
    for name in ("vae_speed", "na_speed", "restore_speed", "train_step", "train_step_compile"):
        argv = steps[names.index(name)].argv
        assert argv[argv.index("--device") + 1] == "cuda"
        assert Path(argv[1]).is_file(), argv[1]
    restore_speed = steps[names.index("restore_speed")].argv
    assert restore_speed[restore_speed.index("--size") + 1] == "512"  # the paper's Table 4 setting
    assert restore_speed[restore_speed.index("--steps") + 1] == "25"
    assert "train_step_compile" not in [s.name for s in gpu_check.plan("cpu", smoke=True, work=tmp_path)]


def test_wheels_are_the_pinned_versions():
    pins = gpu_check.pinned_versions()
    carried = set(gpu_check.CARRIED.values()) - {"importlib_metadata"}  # unpinned: taken from this venv
    assert carried <= set(pins), f"setup.cfg pins none of {carried - set(pins)}"


def test_a_failed_step_skips_its_dependents_and_a_slow_one_is_killed(tmp_path):
    py = sys.executable
    steps = [gpu_check.Step("fails", [py, "-c", "print('boom'); raise SystemExit(3)"], 30),
             gpu_check.Step("after_fails", [py, "-c", "pass"], 30, needs=("fails",)),
             gpu_check.Step("hangs", [py, "-c", "import time; time.sleep(60)"], 2),
             gpu_check.Step("ok", [py, "-c", "print('fine')"], 30)]
    start = time.monotonic()
    report = gpu_check.run_all(steps, tmp_path, budget_s=100, env={}, header={"device": "cpu"})
    assert time.monotonic() - start < 30
    status = {s["name"]: s["status"] for s in report["steps"]}
    assert status == {"fails": "failed", "after_fails": "skipped: fails did not pass", "hangs": "timed out",
                      "ok": "passed"}
    assert report["steps"][0]["rc"] == 3 and "boom" in report["steps"][0]["tail"]
    assert not report["all_passed"]
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == report
    assert "fine" in (tmp_path / "gpu_check.log").read_text()


@pytest.mark.slow
def test_every_step_runs_on_cpu_at_toy_sizes(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "run", "--device", "cpu",
                          "--smoke", "--out", str(out), "--work", str(work), "--budget", "900"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    report = json.loads((out / "gpu_check.json").read_text())
    failed = {s["name"]: s.get("tail", s["status"])[-2000:] for s in report["steps"] if s["status"] != "passed"}
    assert run.returncode == 0 and not failed, failed or run.stdout
    results = {s["name"]: s.get("result") for s in report["steps"]}
    for name in ("vae_speed", "na_speed", "restore_speed", "train_step"):
        assert results[name], f"{name} wrote no JSON"
    assert len(list((work / "restored" / "restored").glob("*.png"))) == 4  # the four held-out crops
    assert "Initializing distributed" in (out / "gpu_check.log").read_text()  # the DDP launch took effect
