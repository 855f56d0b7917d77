"""Every check that needs a CUDA GPU, as one prepared run for a lent GPU machine (project issue 16's
GPU figures; the CUDA paths: natten, bf16-mixed training, a DDP launch, ``restore`` on CUDA).

A GPU machine is lent to some tasks only, for minutes, bare: its image has Python 3.12 with torch,
Lightning, einops, safetensors, scikit-image, OpenCV and pytest, but not omegaconf, lpips, diffusers
(AutoencoderKL, the peer of ``vae_speed.py``) or natten, and nothing can be downloaded there. So:

1. here, where pip reaches the package index::

       PYTHONPATH=. python benchmarks/gpu_check.py wheels

   writes ``.whl/`` (git-ignored): the versions setup.cfg pins, as pure-Python wheels. natten is
   built here without CUDA, so on the GPU it has no libnatten: ``na_speed.py`` then times natten's
   flex-attention kernel (compiled by Triton) rather than its CUTLASS ones.
2. there, carrying ``.whl`` (one command; the default budget, 420 s, leaves a lease of 15 minutes
   the time to start the machine and to rerun what failed with ``--only NAME ... --budget 200``)::

       python3 benchmarks/gpu_check.py run --out $OUT

   installs the missing wheels into a private folder and runs each step below in its own process,
   with a time limit, in priority order, within ``--budget`` seconds. After every step it rewrites
   ``OUT/gpu_check.json`` (per step: the command, exit code, seconds, status, the benchmark's own
   JSON, the end of its output) and appends the whole output to ``OUT/gpu_check.log``, so a run cut
   short still reports what finished. Exit code 0 only when every step passed.

Steps (``run``): ``env`` (GPU, torch, natten backend); ``pytest_gpu`` (the ``gpu``-marked tests:
neighbourhood attention on CUDA against the brute force and natten); the four benchmarks on CUDA in
bf16 -- ``vae_speed`` at 512² (Sim-VAE vs AutoencoderKL images/s, the paper's claim), ``na_speed``
(64×64 tokens, k=7, 4 heads, D=64), ``restore_speed`` at 512², K=25 (paper: 0.5745 s/img on an A100),
``train_step`` (with activation checkpointing); then the quickstart pipeline on CUDA in bf16-mixed
through the command line (``vae`` -> ``export_vae`` -> ``latent_stats`` -> ``posterior_mean`` ->
``flow`` -> ``restore``); ``ddp`` (``configs/launch/torchrun.sh`` with one process and
``trainer.strategy=ddp``); last, ``train_step_compile`` (torch.compile, whose first call compiles).

``run --device cpu --smoke`` runs the same steps on this CPU at toy sizes (``tests/test_gpu_check.py``):
the plumbing is tested here, the CUDA behaviour only there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
# module -> distribution: what the GPU image lacks of the imports these steps make
CARRIED = {"omegaconf": "omegaconf", "lpips": "lpips", "diffusers": "diffusers",
           "importlib_metadata": "importlib_metadata", "natten": "natten"}
# manylinux tags pip matches exactly; the carried wheels are pure Python, so any one matches
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


# ------------------------------------------------------------------------------------------ wheels
def pinned_versions() -> dict[str, str]:
    """name -> version of every ``name==version`` line of setup.cfg (requirements and extras)."""
    text = (ROOT / "setup.cfg").read_text()
    return {name.lower().replace("-", "_"): version
            for name, version in re.findall(r"^\s*([A-Za-z0-9_.-]+)==([^\s;#]+)", text, re.MULTILINE)}


def build_wheels(dest: Path = WHEELS) -> list[Path]:
    """Download (or, for natten, build) the carried wheels for the GPU image's Python 3.12."""
    from importlib.metadata import version

    pins = pinned_versions()
    pins.setdefault("importlib_metadata", version("importlib_metadata"))  # diffusers' dependency, unpinned
    dest.mkdir(exist_ok=True)
    download = [name for name in CARRIED.values() if name != "natten"]
    platform_args = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platform_args, "-d", str(dest),
                    *(f"{name}=={pins[name]}" for name in download)], check=True)
    # no CUDA here: natten builds as pure Python (its flex-attention backends, no libnatten)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest),
                    f"natten=={pins['natten']}"], check=True)
    return sorted(dest.glob("*.whl"))


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_missing_wheels(site: Path) -> list[str]:
    """Install the carried wheels of the modules this Python lacks into ``site``; their names."""
    missing = [module for module in CARRIED if not importable(module)]
    wheels = [w for module in missing for w in WHEELS.glob(f"{CARRIED[module]}-*.whl")]
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
    return [w.name for w in wheels]


# ------------------------------------------------------------------------------------------- steps
@dataclass
class Step:
    name: str
    argv: list[str]
    limit_s: int
    needs: tuple[str, ...] = ()           # steps whose failure makes this one pointless
    result_json: Path | None = None       # the benchmark's own --json file
    env: dict[str, str] = field(default_factory=dict)


ENV_REPORT = """
import platform, torch
from latent_pmrf.models.attention import natten_na2d
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
try:
    import natten
    print("natten", natten.__version__, "libnatten", natten.HAS_LIBNATTEN, "usable", natten_na2d() is not None)
except ImportError as err:
    print("natten missing:", err)
"""

STAGE_PHOTOS = "import sys; from pathlib import Path; from latent_pmrf.cli.quickstart import stage_photos; " \
               "stage_photos(Path(sys.argv[1]))"


def plan(device: str, smoke: bool, work: Path) -> list[Step]:
    py = sys.executable
    cuda = device.startswith("cuda")
    data, ckpt = work / "data", "checkpoints/last.ckpt"

    def bench(name: str, *args: str, limit: int) -> Step:
        out = work / f"{name}.json"
        return Step(name, [py, str(ROOT / "benchmarks" / f"{name.removesuffix('_compile')}.py"), "--device", device,
                           *args, "--json", str(out)], limit, result_json=out)

    def train(config: str, run: str, steps: int, *overrides: str) -> list[str]:
        return [py, "-m", "latent_pmrf", "train", str(ROOT / "configs" / config), *run_overrides(run, steps, *overrides)]

    def run_overrides(run: str, steps: int, *overrides: str) -> list[str]:
        return [f"data.train=[{{root: {data / 'train'}}}]", f"data.val_dir={data / 'val'}",
                f"trainer.output_dir={work / run}", f"trainer.max_steps={steps}", f"trainer.val_every_n_steps={steps}",
                f"trainer.checkpoint_every_n_steps={steps}", f"trainer.log_every_n_steps={min(10, steps)}",
                f"trainer.accelerator={'gpu' if cuda else 'cpu'}", "trainer.devices=1",
                "trainer.precision=bf16-mixed", *overrides]

    n = 3 if smoke else 50  # training steps of each pipeline stage
    vae = ("loss.perceptual_weight=0", f"optim.warmup_steps={n // 2}", f"optim.cosine_steps={n - n // 2}")
    tiny = ["--reps", "1", "--warmup", "0"] if smoke else []
    steps = [
        Step("env", [py, "-c", ENV_REPORT], 120),
        Step("pytest_gpu", [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                            str(ROOT / "tests" / "test_attention.py")], 300),
        bench("vae_speed", "--dtype", "bf16", "--size", "64" if smoke else "512", *tiny, limit=240),
        bench("na_speed", "--dtype", "bf16", *(["--size", "16", *tiny] if smoke else []), limit=180),
        bench("restore_speed", "--size", "128" if smoke else "512", "--steps", "2" if smoke else "25",
              *(["--reps", "1"] if smoke else []), limit=240),
        bench("train_step", "--dtype", "bf16", "--activation-checkpointing",
              *(["--size", "64", *tiny] if smoke else []), limit=240),
        Step("stage_photos", [py, "-c", STAGE_PHOTOS, str(data)], 60),
        Step("vae", train("vae/quickstart.yaml", "vae", n, *vae), 240, needs=("stage_photos",)),
        Step("export_vae", [py, "-m", "latent_pmrf", "export-vae", str(work / "vae" / ckpt), str(work / "vae_export")],
             60, needs=("vae",)),
        Step("latent_stats", [py, "-m", "latent_pmrf", "vae-latent-stats", "--vae", str(work / "vae_export"),
                              "--images", str(data / "train"), "--device", device, "--write"], 60,
             needs=("export_vae",)),
        Step("posterior_mean", train("posterior_mean/quickstart.yaml", "posterior_mean", n), 240,
             needs=("stage_photos",)),
        Step("flow", train("latent_pmrf/quickstart.yaml", "flow", n, f"vae={work / 'vae_export'}",
                           f"posterior_mean.checkpoint={work / 'posterior_mean' / ckpt}",
                           "convergence.metrics=[psnr]"), 240, needs=("latent_stats", "posterior_mean")),
        Step("restore", [py, "-m", "latent_pmrf", "restore", "--ckpt", str(work / "flow" / ckpt),
                         "--input", str(data / "val"), "--output", str(work / "restored"), "--device", device,
                         "--steps", "25", "--overwrite"], 120, needs=("flow",)),
        Step("ddp", ["bash", str(ROOT / "configs" / "launch" / "torchrun.sh"),
                     *run_overrides("ddp", n, *vae), "trainer.strategy=ddp",
                     f"data.batch_size={8 if smoke else 32}"], 180,
             needs=("stage_photos",), env={"GPUS": "1", "CONFIG": str(ROOT / "configs/vae/quickstart.yaml"),
                                           "PYTHON_BIN": py, "MASTER_PORT": "29517"}),
    ]
    if not smoke:  # compiling on CPU takes minutes: only on the GPU
        steps.append(bench("train_step_compile", "--dtype", "bf16", "--compile", limit=420))
    return steps


# -------------------------------------------------------------------------------------------- run
def run_step(step: Step, limit_s: float, env: dict[str, str], log) -> tuple[int | None, str]:
    """Run ``step`` in its own process group (benchmarks and torchrun start children), killing the
    group at ``limit_s``; (exit code or None when killed, combined output)."""
    log.write(f"\n===== {step.name}: {' '.join(step.argv)}\n")
    log.flush()
    proc = subprocess.Popen(step.argv, cwd=ROOT, env={**env, **step.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=limit_s)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
    log.write(output)
    log.flush()
    return code, output


def run_all(steps: list[Step], out: Path, budget_s: float, env: dict[str, str], header: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report = {**header, "steps": []}
    passed: set[str] = set()
    deadline = time.monotonic() + budget_s
    with open(out / "gpu_check.log", "a") as log:
        for step in steps:
            entry = {"name": step.name, "argv": step.argv}
            left = deadline - time.monotonic()
            failed_needs = [need for need in step.needs if need not in passed]
            if failed_needs:
                entry["status"] = f"skipped: {', '.join(failed_needs)} did not pass"
            elif left < 20:
                entry["status"] = "skipped: out of budget"
            else:
                start = time.monotonic()
                code, output = run_step(step, min(step.limit_s, left - 5), env, log)
                entry.update(rc=code, seconds=round(time.monotonic() - start, 1), tail=output[-3000:],
                             status="passed" if code == 0 else ("timed out" if code is None else "failed"))
                if code == 0:
                    passed.add(step.name)
                if step.result_json is not None and step.result_json.is_file():
                    entry["result"] = json.loads(step.result_json.read_text())
            report["steps"].append(entry)
            print(f"{step.name:20s} {entry['status']}" + (f" ({entry['seconds']} s)" if "seconds" in entry else ""),
                  flush=True)
            (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    report["all_passed"] = len(passed) == len(steps)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def replace_needs(step: Step, selected: list[str]) -> Step:
    """With --only, a step needs only the selected steps it needed (the others' outputs may exist)."""
    step.needs = tuple(need for need in step.needs if need in selected)
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("wheels", help="write .whl/ here: the wheels the GPU image lacks")
    r = sub.add_parser("run", help="run every step (on the GPU machine)")
    r.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_check"),
                   help="writes gpu_check.json and gpu_check.log here (default $OUT)")
    r.add_argument("--work", default="/tmp/gpu_check_work", help="runs, benchmark JSON, staged photos")
    r.add_argument("--device", default="cuda")
    r.add_argument("--smoke", action="store_true", help="toy sizes and 3 training steps (the CPU test)")
    r.add_argument("--budget", type=float, default=420, help="seconds for all steps together")
    r.add_argument("--only", nargs="+", help="run only these steps (names as in the module docstring)")
    args = p.parse_args()
    if args.command == "wheels":
        for wheel in build_wheels():
            print(wheel.relative_to(ROOT))
        return

    work, site = Path(args.work), Path(args.work) / "site"
    work.mkdir(parents=True, exist_ok=True)
    installed = install_missing_wheels(site)
    path = [str(ROOT), str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    steps = plan(args.device, args.smoke, work)
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in steps})
        if unknown:
            p.error(f"unknown steps {unknown}; the steps are {[s.name for s in steps]}")
        steps = [replace_needs(s, args.only) for s in steps if s.name in args.only]
    header = {"device": args.device, "smoke": args.smoke, "installed_wheels": installed,
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    report = run_all(steps, Path(args.out), args.budget, env, header)
    sys.exit(0 if report["all_passed"] else 1)


if __name__ == "__main__":
    main()
