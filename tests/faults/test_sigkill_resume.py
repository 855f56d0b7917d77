"""SIGKILL mid-epoch, then the same command again (issue 14): the resumed run must be a bitwise
continuation of an uninterrupted one, for every training task: the same batches in the same order,
the same random draws, the same logged losses and LR, the same final live and EMA weights and
optimizer state.

Each run goes through the real CLI in a subprocess (``latent-pmrf train CONFIG key=value ...``) with
tiny models on one CPU device. A recording wrapper writes, from inside each training step, a digest
of the batch and of torch's generator state, and slows the run to be killed so that the kill lands
mid-epoch: 12 images in batches of 4 are 3 steps an epoch; the run is killed once a checkpoint of
step 4 or later exists (epoch 1), and 7 steps cross into epoch 2 after the resume. Lightning writes
a checkpoint before the step's log row and keeps training while the test notices it, so the killed
run has usually trained past its last checkpoint: the re-run must redo those steps identically.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_SWINIR_CFG, save_tiny_frozen_nets

from latent_pmrf.analysis.run_logs import last_checkpoint, read_logged_metrics
from latent_pmrf.lightning.checkpoints import resume_checkpoint

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS, STEPS_PER_EPOCH, KILL_AFTER = 7, 3, 4  # killed in epoch 1; the re-run ends in epoch 2

RECORDING_SCRIPT = textwrap.dedent('''
    import hashlib, json, os, sys, time
    import torch
    from latent_pmrf.cli.main import main
    from latent_pmrf.lightning.flow_module import FlowModule
    from latent_pmrf.lightning.posterior_mean_module import PosteriorMeanModule
    from latent_pmrf.lightning.re_vae_module import ReVAEModule
    from latent_pmrf.lightning.vae_module import VAEModule

    records, delay = sys.argv[1], float(os.environ["STEP_DELAY"])

    def digest(value):
        data = value.numpy().tobytes() if torch.is_tensor(value) else repr(value).encode()
        return hashlib.sha256(data).hexdigest()[:16]

    def recording(step_fn):
        def training_step(self, batch, batch_idx):
            record = {"step": self.global_step, "rng": digest(torch.get_rng_state()),
                      "batch": {k: digest(v) for k, v in sorted(batch.items())}}
            loss = step_fn(self, batch, batch_idx)
            with open(records, "a") as f:
                f.write(json.dumps(record) + "\\n")
            time.sleep(delay)
            return loss
        return training_step

    for module in (VAEModule, PosteriorMeanModule, FlowModule, ReVAEModule):
        module.training_step = recording(module.training_step)
    main(["train", *sys.argv[2:]])
''')


@pytest.fixture(scope="module")
def frozen_nets(tmp_path_factory):
    """The flow's frozen f8 Sim-VAE (re_vae's starting snapshot too) and posterior-mean SwinIR, tiny."""
    folder = tmp_path_factory.mktemp("frozen")
    save_tiny_frozen_nets(folder)
    return folder


def task_command(task: str, faces_dir: Path, frozen: Path, workers: int) -> list[str]:
    """Config and overrides of a tiny run of ``task`` (output folder and records added per launch)."""
    faces = f"[{{root: {faces_dir / 'hq'}}}]"
    common = ["data.batch_size=4", f"data.num_workers={workers}",
              "optim.ema_decay=0.5", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true",
              f"trainer.max_steps={MAX_STEPS}", "trainer.checkpoint_every_n_steps=1", "trainer.log_every_n_steps=1",
              "trainer.progress_bar=false"]
    if task == "re_vae":  # LayerPairCrops: each background crop with a reflection crop drawn per item
        return [str(ROOT / "configs/re_vae/sim_vae_c32_lora.yaml"), f"vae={frozen / 'vae'}", "data.pairing=sets",
                f"data.background={faces}", f"data.reflection={faces}", "data.crop_size=32",
                "data.val_background_dir=null", "loss.lpips_weight=0", "loss.lpips_pretrained=false",
                "trainer.val_every_n_steps=0", *common]
    common = [f"data.train={faces}", *common]
    if task == "vae":
        return [str(ROOT / "configs/vae/sim_vae_c32.yaml"), "model.block_out_channels=[32,32]",
                "model.layers_per_block=1", "model.layers_mid_block=1", "model.latent_channels=4",
                "loss.perceptual_weight=0", "data.val_dir=null", "data.crop_size=32", "trainer.val_every_n_steps=0",
                *common]
    swinir = [f"{k}={v}" for k, v in TINY_SWINIR_CFG.items()]
    if task == "posterior_mean":  # validation between steps draws from torch's generator (its loader's seed)
        return [str(ROOT / "configs/posterior_mean/swinir_ffhq512.yaml"), *(f"model.{o}" for o in swinir),
                "data.crop_size=64", f"data.val_dir={faces_dir / 'hq'}", "data.val_limit=2", "data.val_batch_size=2",
                "trainer.val_every_n_steps=2", *common]
    return [str(ROOT / "configs/latent_pmrf/ffhq512_c32.yaml"), f"vae={frozen / 'vae'}",
            f"posterior_mean.checkpoint={frozen / 'pm.pth'}", *(f"posterior_mean.model.{o}" for o in swinir),
            "model.preset=hdit_latent_pmrf",
            "model.levels=[{depth: 1, width: 32, d_head: 16, kernel_size: 3, attention: neighborhood},"
            "{depth: 1, width: 64, d_head: 16, attention: global}]",
            "model.mapping_width=32", "model.in_channels=4", "model.out_channels=4", "data.val_dir=null",
            "data.crop_size=64", "convergence.every_n_steps=0", "trainer.val_every_n_steps=0", *common]


def launch(script: Path, out: Path, command: list[str], step_delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "STEP_DELAY": str(step_delay)}
    # Its own process group: the kill takes the dataloader workers too, as a pre-empted job loses them.
    return subprocess.Popen([sys.executable, str(script), str(out / "records.jsonl"), *command,
                             f"trainer.output_dir={out}"], env=env, cwd=out.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    return output


def kill_after_checkpoint(proc: subprocess.Popen, folder: Path, step: int) -> None:
    """SIGKILL the run (and its workers) as soon as a checkpoint of ``step`` or later exists."""
    while not any(int(p.stem[4:]) >= step for p in folder.glob("step*.ckpt")):
        assert proc.poll() is None, f"the run ended before step {step}:\n{proc.communicate()[0][-4000:]}"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def per_step(rows: list[dict[str, str]]) -> dict[int, dict[str, str]]:
    """Logged values by step (a step's metrics may come in several rows)."""
    steps: dict[int, dict[str, str]] = {}
    for row in rows:
        steps.setdefault(int(row["step"]), {}).update({k: v for k, v in row.items() if v != "" and k != "step"})
    return steps


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def assert_same_tensors(a, b, where: str) -> None:
    if torch.is_tensor(a):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
# Dataloader workers change nothing a step sees; checked with the VAE crops and the BFR pairs (the
# flow reads the same BFR pairs, re_vae the VAE crops, paired per item by LayerPairCrops).
@pytest.mark.parametrize("task,workers", [("vae", 0), ("vae", 2), ("posterior_mean", 0), ("posterior_mean", 2),
                                          ("flow", 0), ("re_vae", 0)])
def test_sigkill_mid_epoch_then_rerun_continues_bitwise(task, workers, faces_dir, frozen_nets, tmp_path):
    script = tmp_path / "record.py"
    script.write_text(RECORDING_SCRIPT)
    assert len(list((faces_dir / "hq").glob("*.png"))) == STEPS_PER_EPOCH * 4  # batches of 4
    command = task_command(task, faces_dir, frozen_nets, workers)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()

    first = launch(script, killed, command, step_delay=0.5)  # slow enough to be caught mid-epoch
    uninterrupted = launch(script, whole, command, step_delay=0.0)
    kill_after_checkpoint(first, killed / "checkpoints", KILL_AFTER)
    finish(uninterrupted)
    resumed_from = torch.load(resume_checkpoint(killed), weights_only=True)["global_step"]
    assert resumed_from // STEPS_PER_EPOCH == 1 and resumed_from % STEPS_PER_EPOCH, "not killed mid-epoch"
    output = finish(launch(script, killed, command, step_delay=0.0))
    assert "not resumable" not in output  # Lightning's warning for a loader that restarts its epoch

    # Data order and random draws, step by step (steps after the checkpoint are recorded twice).
    expected = {r["step"]: r for r in records(whole)}
    assert sorted(expected) == list(range(MAX_STEPS))
    seen = records(killed)
    assert {r["step"] for r in seen} == set(expected)
    assert [r["step"] for r in seen][-(MAX_STEPS - resumed_from):] == list(range(resumed_from, MAX_STEPS))
    for r in seen:
        assert r == expected[r["step"]], f"step {r['step']}: {r} != {expected[r['step']]}"

    # Logged losses and LR: every value either launch logged equals the uninterrupted run's.
    want = per_step(read_logged_metrics(whole))
    assert len(list(killed.glob("csv/version_*/metrics.csv"))) == 2  # one per launch
    got_rows = read_logged_metrics(killed)
    for row in got_rows:
        step = int(row["step"])
        for key, value in row.items():
            if value != "" and key != "step":
                assert want[step].get(key) == value, f"step {step}, {key}: {value} != {want[step].get(key)}"
    got = per_step(got_rows)
    assert set(got) <= set(want) and any(k.startswith("lr-") for k in want[MAX_STEPS - 1])
    for step, values in want.items():
        never_logged = set(values) - set(got.get(step, {}))
        # Lightning writes a step's rows (loss, and the LR buffered since the step began) after its
        # checkpoint: a kill in between loses them; the re-run starts with the next step.
        assert not never_logged or step == resumed_from - 1, f"step {step}: {never_logged} never logged"

    # Final live and EMA weights, EMA count, optimizer and LR scheduler state.
    a, b = (torch.load(last_checkpoint(out), map_location="cpu", weights_only=True) for out in (whole, killed))
    assert a["global_step"] == b["global_step"] == MAX_STEPS
    for key in ("state_dict", "current_model_state", "ema_state", "optimizer_states", "lr_schedulers"):
        assert_same_tensors(a[key], b[key], key)


def test_rng_state_round_trips_every_generator_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from latent_pmrf.lightning.resume_state import rng_state, set_rng_state

    def draw():
        return random.random(), np.random.standard_normal(3).tolist(), torch.randn(3).tolist()

    np.random.standard_normal()  # a cached Gaussian is part of NumPy's state
    torch.save(rng_state(torch.device("cpu")), tmp_path / "state.pt")
    first = draw()
    set_rng_state(torch.load(tmp_path / "state.pt", weights_only=True), torch.device("cpu"))
    assert draw() == first
