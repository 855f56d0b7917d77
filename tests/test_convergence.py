"""The convergence callback on a shrunk real flow config: CSV + logger values every N steps, EMA
weights used, injected untrained DINOv2 for a set metric, missing weights skipped with a warning,
resume keeps earlier rows, and plot-convergence reads the result."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from latent_pmrf.analysis.convergence import read_curve
from latent_pmrf.cli.main import main
from latent_pmrf.config import load_config
from latent_pmrf.lightning.bfr_data import BFRDataModule
from latent_pmrf.lightning.fit import last_checkpoint
from latent_pmrf.lightning.flow_module import FlowModule
from latent_pmrf.lightning.restoration_config import ConvergenceConfig, FlowTrainConfig
from latent_pmrf.lightning.train_restoration import fit_flow
from latent_pmrf.metrics.distortion import psnr
from latent_pmrf.metrics.distribution import DINOv2Distance, DINOv2Features
from latent_pmrf.metrics.pixel import PSNR
from latent_pmrf.models.velocity import velocity_preset
from latent_pmrf.models.swinir import SwinIRConfig

from test_restoration_training import TINY_HDIT, TINY_SWINIR, data_overrides, frozen_nets  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def flow_config(faces_dir, vae_dir, pm_file, out, steps, extra=()):
    overrides = [f"vae={vae_dir}", f"posterior_mean.checkpoint={pm_file}",
                 *(f"posterior_mean.model.{o}" for o in TINY_SWINIR), "model.preset=hdit_latent_pmrf", TINY_HDIT,
                 "model.mapping_width=32",
                 "model.in_channels=4", "model.out_channels=4", "val_steps=2", "trainer.val_every_n_steps=100",
                 "convergence.every_n_steps=2", "convergence.euler_steps=2", "convergence.num_images=2", *extra,
                 *data_overrides(faces_dir, out, steps)]
    return load_config(FlowTrainConfig, ROOT / "configs/latent_pmrf/ffhq512_c32.yaml", overrides,
                       presets={"model": velocity_preset, "posterior_mean.model": SwinIRConfig.preset})


def test_convergence_curve_with_ema_weights_and_resume(faces_dir, tmp_path, frozen_nets):  # noqa: F811
    import timm

    vae_dir, pm_file = frozen_nets
    out = tmp_path / "run"
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224, depth=1, embed_dim=48,
                            num_heads=2).eval()
    metrics = {"psnr": PSNR(), "mmd_dinov2": DINOv2Distance("mmd", DINOv2Features(model=vit))}
    cfg = flow_config(faces_dir, vae_dir, pm_file, out, 3)
    fit_flow(cfg, convergence_metrics=metrics)
    rows = list(csv.DictReader((out / "convergence.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 3]  # every 2 steps, and at the end
    assert all(np.isfinite(float(r[m])) for r in rows for m in ("psnr", "mmd_dinov2"))
    steps, values = read_curve(out, "convergence/psnr")  # the CSV logger has it too
    assert list(steps) == [2, 3] and values[-1] == pytest.approx(float(rows[-1]["psnr"]), rel=1e-6)

    # The last point was sampled with the EMA weights: recompute it from the checkpoint's EMA
    # state (FlowModule.from_checkpoint) and from its live weights; only the EMA one matches.
    dm = BFRDataModule(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    module = FlowModule.from_checkpoint(last_checkpoint(out)).eval()

    def curve_point(m):
        gens = [torch.Generator().manual_seed(i) for i in range(batch["lq"].shape[0])]
        restored, _ = m.restore(batch["lq"], 2, generator=gens)
        to01 = lambda x: torch.round((x + 1) * 127.5) / 255  # noqa: E731
        return float(psnr(to01(restored), to01(batch["gt"])).mean())

    assert curve_point(module) == pytest.approx(float(rows[-1]["psnr"]), abs=1e-5)
    live = torch.load(last_checkpoint(out), map_location="cpu", weights_only=True)["current_model_state"]
    module.load_state_dict(live, strict=False)
    assert curve_point(module) != pytest.approx(float(rows[-1]["psnr"]), abs=1e-5)

    # resume to step 4: rows 2 and 3 kept, 4 added
    fit_flow(flow_config(faces_dir, vae_dir, pm_file, out, 4), convergence_metrics=metrics)
    assert [int(r["step"]) for r in csv.DictReader((out / "convergence.csv").open())] == [2, 3, 4]
    main(["plot-convergence", str(out / "convergence.csv"), "--metric", "mmd_dinov2", "--out", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").stat().st_size > 5000


def test_missing_weights_are_skipped_with_a_warning(faces_dir, tmp_path, frozen_nets, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights"))
    vae_dir, pm_file = frozen_nets
    out = tmp_path / "run"
    cfg = flow_config(faces_dir, vae_dir, pm_file, out, 2, ["convergence.metrics=[dists,psnr]"])
    with pytest.warns(UserWarning, match="dists skipped.*DISTS_weights-f5e65c96.pth|dists skipped.*vgg16"):
        fit_flow(cfg)
    rows = list(csv.DictReader((out / "convergence.csv").open()))
    assert list(rows[0]) == ["step", "psnr"] and int(rows[0]["step"]) == 2


def test_paper_configs_log_fig3_curves():
    """Fig. 3 plots FID, DISTS, LPIPS (pyiqa's default: AlexNet), MUSIQ and CLIP-IQA (MMD-DINOv2 too in
    Fig. 1): the default and both paper runs log them, under registered names."""
    import yaml

    curves = {"fid", "dists", "mmd_dinov2", "lpips_alex", "musiq", "clipiqa"}
    assert curves <= set(ConvergenceConfig().metrics)
    for path in ("configs/latent_pmrf/ffhq512_c32.yaml", "configs/pmrf/pixel_ffhq512.yaml"):
        metrics = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))["convergence"]["metrics"]
        assert curves <= set(metrics), path
        ConvergenceConfig(metrics=metrics)  # every name is registered


def test_convergence_config_is_validated():
    with pytest.raises(ValueError, match="convergence.metrics"):
        ConvergenceConfig(metrics=["fid", "nope"])
    with pytest.raises(ValueError, match="every_n_steps"):
        ConvergenceConfig(every_n_steps=-1)
