"""Sim-VAE training end to end on CPU: the real paper config, shrunk."""

import json

import lightning as L
import numpy as np
import pytest
import torch

from conftest import REPO
from latent_pmrf.cli.main import main
from latent_pmrf.config import load_config
from latent_pmrf.data.image_folder import ImageFolderCenter
from latent_pmrf.analysis.run_logs import last_checkpoint, read_logged_metrics
from latent_pmrf.lightning.tasks import TASKS, train
from latent_pmrf.lightning.vae_config import VAETrainConfig
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig

CONFIG = REPO / "configs" / "vae" / "sim_vae_c32.yaml"


def shrink_overrides(faces_dir, out, max_steps, extra=()):
    """Dotlist shrinking configs/vae/sim_vae_c32.yaml: tiny widths, an untrained VGG, 64^2 crops,
    one CPU device (the paper config asks for 8, which would spawn CPU DDP)."""
    return [
        "model.block_out_channels=[32,32,64,64]", "model.layers_per_block=1", "model.layers_mid_block=1",
        "loss.vgg_pretrained=false", f"data.train=[{{root: {faces_dir / 'hq'}}}]", f"data.val_dir={faces_dir / 'hq'}",
        "data.val_limit=2", "data.crop_size=64", "data.val_crop_size=64", "data.batch_size=2", "data.val_batch_size=2",
        "data.num_workers=0", "trainer.accelerator=cpu", "trainer.devices=1", f"trainer.output_dir={out}",
        f"trainer.max_steps={max_steps}", "trainer.val_every_n_steps=2", "trainer.checkpoint_every_n_steps=2",
        "trainer.log_every_n_steps=1", "trainer.progress_bar=false", *extra,
    ]


def shrunk(faces_dir, out, max_steps, extra=()):
    return load_config(VAETrainConfig, CONFIG, shrink_overrides(faces_dir, out, max_steps, extra),
                       presets=SimVAEConfig.preset)


class RecordValidationWeights(L.Callback):
    def __init__(self):
        self.weights = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.weights.append(pl_module.vae.encoder.conv_out.weight.detach().clone())


def test_two_steps_then_resume_then_export(faces_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    recorder = RecordValidationWeights()
    original_init = L.Trainer.__init__

    def init_with_recorder(self, *args, callbacks=(), **kwargs):
        original_init(self, *args, callbacks=[*callbacks, recorder], **kwargs)

    monkeypatch.setattr(L.Trainer, "__init__", init_with_recorder)
    train(TASKS["vae"], shrunk(faces_dir, out, max_steps=2), val_lpips=False)
    ckpt = torch.load(last_checkpoint(out), map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    ema, live = ckpt["state_dict"], ckpt["current_model_state"]
    key = "vae.encoder.conv_out.weight"
    assert not torch.equal(ema[key], live[key])
    # Validation ran on the EMA weights (those stored as the checkpoint's state_dict), not the live ones.
    assert len(recorder.weights) == 1 and torch.equal(recorder.weights[0], ema[key])

    # Same command with a larger budget resumes from last.ckpt instead of starting over.
    train(TASKS["vae"], shrunk(faces_dir, out, max_steps=4), val_lpips=False)
    ckpt2 = torch.load(last_checkpoint(out), map_location="cpu", weights_only=True)
    assert ckpt2["global_step"] == 4
    # Both launches' logs survive: steps 0-1 from the first, 2-3 from the resumed one.
    logged = sorted({int(r["step"]) for r in read_logged_metrics(out) if r.get("train/total")})
    assert logged == [0, 1, 2, 3]

    # export-vae: EMA weights in the official format, read back by from_pretrained.
    assert main(["export-vae", str(last_checkpoint(out)), str(tmp_path / "export")]) is None
    vae = SimVAE.from_pretrained(tmp_path / "export")
    for k, v in vae.state_dict().items():
        assert torch.equal(v, ckpt2["state_dict"]["vae." + k]), k
    assert (out / "config.yaml").is_file() and list((out / "samples").glob("*.png"))


def test_cli_train_with_overrides(faces_dir, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(CONFIG.read_text())
    main(["train", str(cfg_path), *shrink_overrides(faces_dir, tmp_path / "cli", max_steps=1,
                                                    extra=["data.val_dir=null"])])
    assert torch.load(last_checkpoint(tmp_path / "cli"), weights_only=True)["global_step"] == 1


def test_cli_reports_a_bad_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", str(CONFIG), "trainer.max_step=1"])
    assert exc.value.code == 2 and "max_step" in capsys.readouterr().err


def test_latent_stats_against_numpy(faces_dir, tmp_path):
    torch.manual_seed(0)
    vae = SimVAE(SimVAEConfig(block_out_channels=[32, 32], layers_per_block=1, layers_mid_block=1, latent_channels=4))
    vae.save_pretrained(tmp_path)
    main(["vae-latent-stats", "--vae", str(tmp_path), "--images", str(faces_dir / "hq"), "--limit", "3",
          "--crop-size", "64", "--device", "cpu", "--write"])
    with torch.no_grad():
        z = np.concatenate([vae.encode(item["image"][None]).mean.numpy().ravel()
                            for item in ImageFolderCenter(faces_dir / "hq", 64, 3)])
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["shift_factor"] == pytest.approx(z.mean(), rel=1e-4, abs=1e-6)
    assert raw["scaling_factor"] == pytest.approx(1 / z.std(), rel=1e-4)
    loaded = SimVAE.from_pretrained(tmp_path)
    assert loaded.config.scaling_factor == raw["scaling_factor"]


@pytest.mark.slow
def test_quickstart_writes_its_outputs(tmp_path):
    from latent_pmrf.cli.quickstart import run_quickstart

    metrics = run_quickstart(tmp_path, max_steps=3, pm_steps=2, flow_steps=2)
    for name in ("reconstruction.png", "restoration.png", "loss_curve.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 1000 or name == "metrics.json"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["ema_weights"] is True and np.isfinite(saved["held_out_psnr_db"]) and saved["steps"] == 3
    assert SimVAE.from_pretrained(tmp_path / "vae_export").config.latent_channels == 16
    assert np.isfinite(saved["restoration"]["latent_pmrf_psnr_db"]) and saved["restoration"]["flow_steps"] == 2
    assert saved["restoration"]["posterior_mean_steps"] == 2
    # issue 17: the degraded input is a row; the PD plane has at least three distinct points; the
    # convergence curve is the held-out flow loss; the latent normalisation is measured, stored, reported
    import csv

    with (tmp_path / "eval" / "results.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert {"lq", "posterior_mean", "latent_pmrf_K1", "latent_pmrf_K25"} <= set(rows)
    # what the VAE allows: the ground truth and f(y) through it, as reference rows of the table
    assert {"gt_through_vae", "posterior_mean_through_vae"} <= set(rows)
    assert len(list((tmp_path / "eval" / "gt_through_vae").glob("*.png"))) == 4
    x, y = saved["evaluation"]["pd_axes"]
    assert len({(rows[m][x], rows[m][y]) for m in rows}) >= 3 and (tmp_path / "pd.png").stat().st_size > 1000
    assert saved["evaluation"]["convergence"]["metric"] == "val/flow_loss" and (tmp_path / "convergence.png").is_file()
    stats = saved["latent_normalisation"]
    exported = SimVAE.from_pretrained(tmp_path / "vae_export").config
    assert (exported.shift_factor, exported.scaling_factor) == (stats["shift_factor"], stats["scaling_factor"])
    assert set(saved["stage_seconds"]) >= {"Sim-VAE training", "posterior-mean training", "Latent-PMRF training"}
    # a re-run continues (nothing left to train) and evaluates again over its earlier outputs
    again = run_quickstart(tmp_path, max_steps=3, pm_steps=2, flow_steps=2)
    assert again["restoration"] == metrics["restoration"]


def test_ema_averages_only_the_autoencoder(faces_dir, tmp_path):
    """The frozen VGG is neither averaged nor stored twice; resume restores live and EMA weights."""
    out = tmp_path / "run"
    train(TASKS["vae"], shrunk(faces_dir, out, max_steps=2, extra=["trainer.val_every_n_steps=100"]), val_lpips=False)
    ckpt = torch.load(last_checkpoint(out), map_location="cpu", weights_only=True)
    assert all(k.startswith("vae.") for k in ckpt["current_model_state"])
    assert any(k.startswith("perceptual.") for k in ckpt["state_dict"])
    assert int(ckpt["ema_state"]["n_averaged"]) == 2


def test_quickstart_rerun_with_other_settings_names_the_way_out_and_fresh_clears_only_its_outputs(tmp_path,
                                                                                                  monkeypatch):
    """A re-run after the quickstart's settings changed (e.g. a git pull) is refused with --fresh / --out
    named; --fresh removes the quickstart's own outputs and nothing else in the folder."""
    from latent_pmrf.cli import quickstart
    from latent_pmrf.lightning.checkpoints import ConfigDriftError

    def drifted(out, max_steps, pm_steps, flow_steps):
        raise ConfigDriftError(f"{out}/posterior_mean/checkpoints/last.ckpt was trained with another config (loss: 'l1' -> 'mse')")

    monkeypatch.setattr(quickstart, "_run", drifted)
    with pytest.raises(ConfigDriftError, match=r"quickstart --fresh.*--out NEW_DIR") as err:
        quickstart.run_quickstart(tmp_path)
    assert "loss: 'l1' -> 'mse'" in str(err.value) and "\n" not in str(err.value)

    for name in ("vae", "posterior_mean", "eval"):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "my_runs").mkdir()
    monkeypatch.setattr(quickstart, "_run", lambda out, max_steps, pm_steps, flow_steps: {"ran": True})
    assert quickstart.run_quickstart(tmp_path, fresh=True) == {"ran": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_runs", "notes.txt"]


def test_quickstart_cli_passes_only_the_steps_given(monkeypatch):
    """Defaults live in quickstart.py (VAE_STEPS, PM_STEPS, FLOW_STEPS), not again in the parser."""
    from latent_pmrf.cli import main as cli
    from latent_pmrf.cli import quickstart

    calls = []
    monkeypatch.setattr(quickstart, "run_quickstart", lambda out, **kwargs: calls.append((out, kwargs)))
    cli.main(["quickstart", "--out", "somewhere", "--pm-steps", "5"])
    cli.main(["quickstart", "--steps", "7", "--flow-steps", "9", "--fresh"])
    assert calls == [("somewhere", {"fresh": False, "pm_steps": 5}),
                     ("runs/quickstart", {"fresh": True, "max_steps": 7, "flow_steps": 9})]
