"""DDP proven on CPU (issue 14): each training task runs with Lightning DDP on 2 CPU processes (gloo)
through the real CLI, and once in one process with the same global batch (4 = 2 ranks × 2 or
1 × 4), and what must match does.

What is random differs between ranks by design (per-rank seeds: tests/test_ddp_seeding.py checks
that ε, posterior samples and t differ). To compare with one process the recorder removes it:
σ_s = 0 (``source_noise_std=0``), posterior samples replaced by their mode, and every t moved to
the centre of its stratum (the real strata are kept, so their interleaving is still checked).
Degradations and data order are seeded by (seed, epoch, index), the same in both runs.

Checked, per task: the data each step consumed (the union of the ranks' batches is the 1-process
batch; ranks disjoint every epoch), the loss (mean of the ranks' losses) against the 1-process loss
at every step, the averaged gradient (bitwise the same on both ranks; against the 1-process
gradient at step 0, where the weights are the same), the EMA weights after N steps (bitwise the
same on both ranks), t strata interleaving (flow), only rank 0 writing in the output folder (an
audit hook in each process sees every Python-level open for writing, rename, removal and new
folder), and for the restoration tasks: each rank validates and restores for the convergence
curve its own shard only, and ``val/psnr``, ``val/ssim`` and the convergence CSV equal the
1-process values. (The sharding logic alone is checked exactly, with ranks as threads, in
tests/test_convergence.py; here the weights of the two runs differ by rounding.)

The training runs in a subprocess (`latent-pmrf train ... trainer.strategy=ddp trainer.devices=2`);
Lightning's launcher re-runs the launcher script for rank 1, which installs the recorder again.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = textwrap.dedent('''
    import sys
    sys.path.insert(0, {here!r})
    from test_ddp import install_recorder
    install_recorder(sys.argv[1], sys.argv[2], audit_writes=True)
    from latent_pmrf.cli.main import main
    main(["train", *sys.argv[3:]])
''').format(here=str(Path(__file__).parent))
STEPS = 4  # 8 images, global batch 4: two epochs (the VAE: 4 images, four epochs)
# Tolerances (measured on CPU: loss <= 1e-7, gradient <= 7e-6, values <= 7e-7): float32 sums in
# another order (the mean of two ranks' means vs one mean, DDP's bucketed all-reduce), carried by
# AdamW into weights that differ by rounding; validation and convergence run on those weights.
LOSS_RTOL = 1e-6  # each step's loss
GRAD_RTOL = 1e-4  # ‖g_DDP - g_1‖ / ‖g_1‖ at step 0 (same weights)
VALUE_RTOL = 1e-5  # val/psnr, val/ssim and the convergence CSV (8 significant digits)


# ------------------------------------------------------------------------ the recorder (every process)
class PooledColours(torch.nn.Module):
    """A stand-in DINOv2 trunk (no download): the "CLS token" is the mean colour on a 4x4 grid."""

    def forward_features(self, x):  # (B, 3, H, W) -> (B, 1, 48)
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)[:, None]


class Recorder(L.Callback):
    """Per step: the batch's files, epoch, loss, t; the averaged gradient of the trained net; the
    images this rank validated and restored for the convergence curve; at the end the EMA weights.
    Written to RECORDS/rank<r>.json and RECORDS/rank<r>.pt."""

    def __init__(self, records: Path, draws: dict):
        self.records, self.draws = records, draws
        self.steps, self.grads, self.validated = [], [], []

    def on_train_start(self, trainer, pl_module):
        self.ema_start = {k: v.clone() for k, v in self._ema(trainer).average.module.state_dict().items()}

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.validated += batch["index"].tolist()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch = {"epoch": trainer.current_epoch, "paths": [Path(p).name for p in batch["path"]]}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        trained = pl_module.get_submodule(pl_module.ema_target)
        self.grads.append(torch.cat([p.grad.flatten() for p in trained.parameters() if p.grad is not None]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        t = self.draws.pop("t", None)
        self.steps.append({**self.batch, "loss": float(loss), "t": None if t is None else t.tolist()})

    def on_train_end(self, trainer, pl_module):
        rank = trainer.global_rank
        torch.save({"grads": self.grads, "ema_start": self.ema_start,
                    "ema": self._ema(trainer).average.module.state_dict()}, self.records / f"rank{rank}.pt")
        (self.records / f"rank{rank}.json").write_text(json.dumps(
            {"steps": self.steps, "validated": self.validated, "convergence": self.draws.get("convergence", [])}))

    @staticmethod
    def _ema(trainer):
        from latent_pmrf.lightning.ema import EMA

        return next(c for c in trainer.callbacks if isinstance(c, EMA))


def install_recorder(records: str | Path, output_dir: str | Path, audit_writes: bool = False,
                     setattr_=setattr, setitem=lambda d, k, v: d.__setitem__(k, v)) -> None:
    """Patch this process: the recorder joins every Trainer, noise is removed (module docstring),
    convergence gets untrained metrics; with ``audit_writes`` every write under ``output_dir`` is
    logged to RECORDS/writes_rank<LOCAL_RANK>.json at exit (an audit hook cannot be removed: only
    in a subprocess). ``setattr_``/``setitem``: pytest's monkeypatch in the test process."""
    from latent_pmrf.flow import stratified_uniform
    from latent_pmrf.lightning import convergence, flow_module
    from latent_pmrf.lightning.tasks import TASKS
    from latent_pmrf.metrics.distribution import DINOv2Distance, DINOv2Features
    from latent_pmrf.metrics.pixel import PSNR
    from latent_pmrf.models.gaussian import DiagonalGaussian
    from latent_pmrf.seeding import torch_generator

    records = Path(records)
    draws: dict = {}
    if audit_writes:
        _audit_writes(records, Path(output_dir).resolve())

    def centred_strata(batch_size, rank=0, world_size=1, *args, **kwargs):
        t = stratified_uniform(batch_size, rank, world_size, *args, **kwargs)  # the real strata
        n = batch_size * world_size
        draws["t"] = (torch.floor(t * n) + 0.5) / n  # each stratum's centre: the t of that global position
        return draws["t"]

    def recording_generator(seed, index, **kwargs):  # the convergence callback: one per image restored
        draws.setdefault("convergence", []).append(index)
        return torch_generator(seed, index, **kwargs)

    setattr_(flow_module, "stratified_uniform", centred_strata)
    setattr_(convergence, "torch_generator", recording_generator)
    setattr_(DiagonalGaussian, "sample", lambda self, generator=None: self.mode())

    flow = TASKS["flow"]

    def build_flow(cfg, **extras):
        features = DINOv2Features(model=PooledColours(), image_size=32)
        return flow.build(cfg, convergence_metrics={"psnr": PSNR(), "mmd_dinov2": DINOv2Distance("mmd", features)})

    setitem(TASKS, "flow", dataclasses.replace(flow, build=build_flow))
    trainer_init = L.Trainer.__init__

    def init_with_recorder(self, *args, callbacks=(), **kwargs):
        trainer_init(self, *args, callbacks=[*callbacks, Recorder(records, draws)], **kwargs)

    setattr_(L.Trainer, "__init__", init_with_recorder)


def _audit_writes(records: Path, output_dir: Path) -> None:
    import atexit

    writes: list[list[str]] = []
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path) -> str | None:
        if path is None or isinstance(path, int):
            return None
        full = Path(os.path.abspath(os.fsdecode(path)))
        return str(full) if full == output_dir or output_dir in full.parents else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & write_flags)
            paths = [path] if writing else []
        elif event in ("os.rename", "os.link", "os.symlink"):
            paths = list(args[:2])
        elif event in ("os.remove", "os.rmdir", "os.truncate", "shutil.rmtree", "os.chmod", "os.utime"):
            paths = [args[0]]
        elif event == "os.mkdir":
            paths = [args[0]] if not os.path.isdir(os.fsdecode(args[0])) else []  # exist_ok on a folder there
        else:
            return
        for path in paths:
            found = inside(path)
            if found:
                writes.append([event, found])

    def dump() -> None:
        (records / f"writes_rank{os.environ.get('LOCAL_RANK', '0')}.json").write_text(json.dumps(writes))

    sys.addaudithook(hook)
    atexit.register(dump)


# ------------------------------------------------------------------------ the runs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """8 photos of 64², a tiny Sim-VAE and a tiny SwinIR f(y) saved as DifFace releases it."""
    from conftest import TINY_SWINIR_CFG, save_tiny_frozen_nets
    from test_ddp_seeding import _photos

    root = tmp_path_factory.mktemp("ddp_inputs")
    save_tiny_frozen_nets(root)
    return {"images": _photos(root / "hq"), "vae": root / "vae", "pm": root / "pm.pth", "swinir": TINY_SWINIR_CFG}


def task_args(task: str, inputs: dict) -> list[str]:
    """Config and overrides of a tiny run of ``task`` (the global batch and devices come later)."""
    images = inputs["images"]
    tiny_swinir = [f"{k}={v}" for k, v in inputs["swinir"].items()]
    common = ["data.num_workers=0", "trainer.accelerator=cpu", "trainer.precision=32-true",
              f"trainer.max_steps={STEPS}", "trainer.checkpoint_every_n_steps=2", "trainer.log_every_n_steps=1",
              "trainer.progress_bar=false"]
    restoration_data = [f"data.train=[{{root: {images}}}]", f"data.val_dir={images}", "data.val_limit=5",
                        "data.crop_size=64", "data.val_batch_size=2", f"trainer.val_every_n_steps={STEPS}"]
    if task == "vae":
        return [str(ROOT / "configs/vae/sim_vae_c32.yaml"), "model.block_out_channels=[16,16]",
                "model.layers_per_block=1", "model.layers_mid_block=1", "model.latent_channels=4",
                "loss.perceptual_weight=0", f"data.train=[{{root: {images}, limit: 4}}]", "data.val_dir=null",
                "data.crop_size=64", "data.hflip=false", "trainer.val_every_n_steps=0", *common]
    if task == "posterior_mean":
        return [str(ROOT / "configs/posterior_mean/swinir_ffhq512.yaml"), *(f"model.{o}" for o in tiny_swinir),
                "model.drop_path_rate=0", *restoration_data, *common]
    return [str(ROOT / "configs/latent_pmrf/ffhq512_c32.yaml"), f"vae={inputs['vae']}",
            f"posterior_mean.checkpoint={inputs['pm']}", *(f"posterior_mean.model.{o}" for o in tiny_swinir),
            "model.preset=hdit_latent_pmrf",
            ("model.levels=[{depth: 1, width: 32, d_head: 16, kernel_size: 3, attention: neighborhood},"
             "{depth: 1, width: 64, d_head: 16, attention: global}]"),
            "model.mapping_width=32", "model.in_channels=4", "model.out_channels=4", "source_noise_std=0",
            "val_euler_steps=2", "convergence.every_n_steps=2", "convergence.euler_steps=2",
            "convergence.num_images=5", *restoration_data, *common]


def run_ddp(task: str, inputs: dict, tmp_path: Path) -> tuple[Path, Path]:
    records, out = tmp_path / "ddp_records", tmp_path / "ddp_run"
    records.mkdir()
    (tmp_path / "launch.py").write_text(LAUNCHER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [*task_args(task, inputs), "data.batch_size=2", "trainer.devices=2", "trainer.strategy=ddp",
            f"trainer.output_dir={out}"]
    proc = subprocess.run([sys.executable, str(tmp_path / "launch.py"), str(records), str(out), *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, output
    assert all((records / f"rank{r}.json").is_file() for r in (0, 1)), f"a rank trained no step:\n{output}"
    return records, out


def run_one_process(task: str, inputs: dict, tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    from latent_pmrf.cli.main import main

    records, out = tmp_path / "one_records", tmp_path / "one_run"
    records.mkdir()
    install_recorder(records, out, setattr_=monkeypatch.setattr, setitem=monkeypatch.setitem)
    main(["train", *task_args(task, inputs), "data.batch_size=4", "trainer.devices=1", "trainer.strategy=auto",
          f"trainer.output_dir={out}"])
    return records, out


def logged(out: Path, key: str) -> dict[int, float]:
    """{step: value} of ``key`` in the run's CSV log."""
    rows = csv.DictReader((out / "csv" / "version_0" / "metrics.csv").open())
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


# ------------------------------------------------------------------------ the test
@pytest.mark.slow
@pytest.mark.parametrize("task", ["vae", "posterior_mean", "flow"])
def test_ddp_matches_one_process(task, inputs, tmp_path, monkeypatch):
    ddp_records, ddp_out = run_ddp(task, inputs, tmp_path)
    one_records, one_out = run_one_process(task, inputs, tmp_path, monkeypatch)
    ddp_logs = [json.loads((ddp_records / f"rank{r}.json").read_text()) for r in (0, 1)]
    one_log = json.loads((one_records / "rank0.json").read_text())
    ranks, one = [log["steps"] for log in ddp_logs], one_log["steps"]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == STEPS

    # Data: ranks disjoint every epoch and together the whole set; each step the 1-process batch.
    n_images = 4 if task == "vae" else 8
    for epoch in {s["epoch"] for s in ranks[0]}:
        shards = [[p for s in rank if s["epoch"] == epoch for p in s["paths"]] for rank in ranks]
        assert not set(shards[0]) & set(shards[1]) and len(set(shards[0] + shards[1])) == n_images
    for a, b, single in zip(*ranks, one):
        assert sorted(a["paths"] + b["paths"]) == sorted(single["paths"])

    # Loss: the mean of the ranks' (equal-size) batch means is the global batch's mean.
    ddp_loss = np.array([(a["loss"] + b["loss"]) / 2 for a, b in zip(*ranks)])
    np.testing.assert_allclose(ddp_loss, [s["loss"] for s in one], rtol=LOSS_RTOL)
    assert len(set(np.round(ddp_loss, 6))) == STEPS  # a trajectory, not a constant

    # Gradients: DDP's average is the same tensor on both ranks and the 1-process gradient.
    grads = [torch.load(ddp_records / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = torch.load(one_records / "rank0.pt", weights_only=True)
    assert all(torch.equal(g0, g1) for g0, g1 in zip(grads[0]["grads"], grads[1]["grads"]))
    step0 = grads[0]["grads"][0]
    assert (step0 - single["grads"][0]).norm() <= GRAD_RTOL * single["grads"][0].norm()

    # EMA after STEPS steps: bitwise the same on both ranks (and it moved).
    ema0, ema1 = grads[0]["ema"], grads[1]["ema"]
    assert ema0.keys() == ema1.keys() and all(torch.equal(ema0[k], ema1[k]) for k in ema0)
    assert not all(torch.equal(ema0[k], grads[0]["ema_start"][k]) for k in ema0)

    if task == "flow":
        # t strata interleave: rank r holds bins r, r + 2 of the 4 (PMRF's stratified t over the global batch).
        for a, b in zip(*ranks):
            assert [int(t * 4) for t in a["t"]] == [0, 2] and [int(t * 4) for t in b["t"]] == [1, 3]

    # Only rank 0 writes: checkpoints, logs, samples, convergence CSV; rank 1 nothing at all.
    writes = {r: json.loads((ddp_records / f"writes_rank{r}.json").read_text()) for r in (0, 1)}
    assert writes[1] == [], f"rank 1 wrote in the output folder: {writes[1][:5]}"
    written = {part for _, p in writes[0] for part in Path(p).relative_to(ddp_out).parts[:1]}
    assert {"checkpoints", "csv", "tensorboard", "config.yaml"} | ({"samples"} if task != "vae" else set()) <= written
    assert (ddp_out / "checkpoints" / "last.ckpt").is_file()

    # Sharded validation (5 images: shards [0, 2) and [2, 5), one batch and two) and convergence
    # (at steps 2 and 4): each rank restores its shard only, and the values equal one process's.
    if task != "vae":
        assert [log["validated"] for log in ddp_logs] == [[0, 1], [2, 3, 4]]
        assert one_log["validated"] == [0, 1, 2, 3, 4]
        for key in ("val/psnr", "val/ssim"):
            ddp_val, one_val = logged(ddp_out, key), logged(one_out, key)
            assert ddp_val.keys() == one_val.keys() and ddp_val
            np.testing.assert_allclose(list(ddp_val.values()), list(one_val.values()), rtol=VALUE_RTOL)
    if task == "flow":
        assert "convergence.csv" in written
        assert [log["convergence"] for log in ddp_logs] == [[0, 1] * 2, [2, 3, 4] * 2]
        assert one_log["convergence"] == [0, 1, 2, 3, 4] * 2
        curves = [list(csv.DictReader((out / "convergence.csv").open())) for out in (ddp_out, one_out)]
        assert [r["step"] for r in curves[0]] == [r["step"] for r in curves[1]] == ["2", "4"]
        for a, b in zip(*curves):
            np.testing.assert_allclose([float(a[m]) for m in ("psnr", "mmd_dinov2")],
                                       [float(b[m]) for m in ("psnr", "mmd_dinov2")], rtol=VALUE_RTOL)
