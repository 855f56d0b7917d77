"""Faults a long run meets (issue 14): a write that dies half-way, a corrupt last.ckpt, a re-run with
another config, a NaN step. Each is injected into a tiny real training run (the paper's VAE config,
shrunk) and the promised behaviour is checked."""

import errno
from pathlib import Path

import pytest
import torch

from latent_pmrf.analysis.run_logs import last_checkpoint
from latent_pmrf.lightning.checkpoints import AtomicCheckpointIO, CheckpointWriteError, resume_checkpoint
from latent_pmrf.lightning.guards import NonFiniteError
from latent_pmrf.lightning.tasks import TASKS, load_task_config, train
from latent_pmrf.lightning.vae_module import VAEModule

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "vae" / "sim_vae_c32.yaml"


def tiny_vae_run(faces_dir, out, max_steps, extra=()):
    return load_task_config(CONFIG, [
        "model.block_out_channels=[32,32]", "model.layers_per_block=1", "model.layers_mid_block=1",
        "model.latent_channels=4", "loss.vgg_pretrained=false", f"data.train=[{{root: {faces_dir / 'hq'}}}]",
        "data.val_dir=null", "data.crop_size=32", "data.batch_size=2", "data.num_workers=0",
        "trainer.accelerator=cpu", "trainer.devices=1", f"trainer.output_dir={out}", f"trainer.max_steps={max_steps}",
        "trainer.val_every_n_steps=0", "trainer.checkpoint_every_n_steps=1", "trainer.log_every_n_steps=1",
        "trainer.progress_bar=false", *extra])[1]


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"last\.ckpt: No space left on device.*previous checkpoint"):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_corrupt_last_checkpoint_falls_back_to_the_newest_intact_one(faces_dir, tmp_path):
    out = tmp_path / "run"
    train(TASKS["vae"], tiny_vae_run(faces_dir, out, 2), val_lpips=False)
    folder = out / "checkpoints"
    last = last_checkpoint(out)
    last.write_bytes(last.read_bytes()[:1000])  # killed mid-write by a non-atomic writer
    with pytest.warns(UserWarning, match="last.ckpt truncated or corrupt; resuming from .*step"):
        found = resume_checkpoint(out)
    assert found.name.startswith("step")
    with pytest.warns(UserWarning, match="truncated or corrupt"):
        train(TASKS["vae"], tiny_vae_run(faces_dir, out, 3), val_lpips=False)
    assert torch.load(last_checkpoint(out), map_location="cpu", weights_only=True)["global_step"] == 3
    for path in folder.glob("*.ckpt"):
        path.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="no intact checkpoint to resume from"):
        train(TASKS["vae"], tiny_vae_run(faces_dir, out, 4), val_lpips=False)


def test_resume_with_another_config_is_refused_and_config_yaml_kept(faces_dir, tmp_path):
    out = tmp_path / "run"
    train(TASKS["vae"], tiny_vae_run(faces_dir, out, 1), val_lpips=False)
    written = (out / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"optim.lr: 0.0001 -> 0.005"):
        train(TASKS["vae"], tiny_vae_run(faces_dir, out, 2, ["optim.lr=0.005"]), val_lpips=False)
    with pytest.raises(ValueError, match=r"model.latent_channels: 4 -> 8"):
        train(TASKS["vae"], tiny_vae_run(faces_dir, out, 2, ["model.latent_channels=8"]), val_lpips=False)
    assert (out / "config.yaml").read_text() == written  # never a config.yaml that is not the one in use
    train(TASKS["vae"], tiny_vae_run(faces_dir, out, 2), val_lpips=False)  # longer is fine
    assert torch.load(last_checkpoint(out), map_location="cpu", weights_only=True)["global_step"] == 2


def _nan_at(step: int, monkeypatch):
    original = VAEModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == step else loss

    monkeypatch.setattr(VAEModule, "training_step", poisoned)


def test_nan_step_stops_naming_step_and_files_and_keeps_the_good_checkpoint(faces_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _nan_at(1, monkeypatch)
    with pytest.raises(NonFiniteError, match=r"step 1: non-finite gradients .*batch: paths .*hq_\d+\.png"):
        train(TASKS["vae"], tiny_vae_run(faces_dir, out, 3), val_lpips=False)
    ckpt = torch.load(last_checkpoint(out), map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())  # EMA clean
    assert all(torch.isfinite(v).all() for v in ckpt["current_model_state"].values() if v.is_floating_point())


def test_nan_step_skipped_and_counted_with_skip_policy(faces_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _nan_at(1, monkeypatch)
    train(TASKS["vae"], tiny_vae_run(faces_dir, out, 3, ["trainer.on_nonfinite=skip"]), val_lpips=False)
    ckpt = torch.load(last_checkpoint(out), map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    from latent_pmrf.analysis.run_logs import read_logged_metrics

    skipped = [float(r["train/skipped_steps"]) for r in read_logged_metrics(out) if r.get("train/skipped_steps")]
    assert skipped and max(skipped) == 1.0


def test_resume_picks_the_newest_intact_checkpoint_including_slurm_hpc(tmp_path):
    import os

    (tmp_path / "checkpoints").mkdir()
    files = {"checkpoints/step00000004.ckpt": 100, "checkpoints/last.ckpt": 200, "hpc_ckpt_1.ckpt": 300}
    for name, mtime in files.items():
        torch.save({"name": name}, tmp_path / name)
        os.utime(tmp_path / name, (mtime, mtime))
    assert resume_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_1.ckpt"  # SIGUSR1's checkpoint is the newest
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"cut")
    with pytest.warns(UserWarning, match="hpc_ckpt_1.ckpt truncated or corrupt; resuming from .*last.ckpt"):
        assert resume_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    assert resume_checkpoint(tmp_path / "nothing_here") is None


def test_a_field_added_since_the_checkpoint_resumes_at_its_default():
    """A checkpoint written before data.small_images / data.seed existed: those keys are absent from
    its stored config. Compared through today's schema, they take their defaults and are no change;
    set to anything else, they are."""
    from latent_pmrf.config import to_dict
    from latent_pmrf.lightning.checkpoints import config_changes
    from latent_pmrf.lightning.fit import with_defaults
    from latent_pmrf.lightning.vae_config import VAETrainConfig

    cfg = VAETrainConfig()
    stored = to_dict(cfg)
    del stored["data"]["small_images"], stored["data"]["seed"]
    assert config_changes(stored, to_dict(cfg))  # raw: the missing keys read as changed
    assert config_changes(with_defaults(VAETrainConfig, stored), to_dict(cfg)) == {}
    cfg.data.small_images = "upscale"
    assert list(config_changes(with_defaults(VAETrainConfig, stored), to_dict(cfg))) == ["data.small_images"]
