"""The convergence callback on a shrunk real flow config: CSV + logger values every N steps, EMA
weights used, injected untrained DINOv2 for a set metric, missing weights skipped with a warning,
resume keeps earlier rows, plot-convergence reads the result, and sharded ranks (threads here; real
DDP in tests/faults/test_ddp.py) get the 1-process numbers."""

import csv
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from latent_pmrf.analysis.convergence import read_curve
from latent_pmrf.cli.main import main
from latent_pmrf.config import load_config
from latent_pmrf.lightning.bfr_data import BFRDataModule
from latent_pmrf.analysis.run_logs import last_checkpoint
from latent_pmrf.flow import RestorationPipeline
from latent_pmrf.lightning.restoration_config import ConvergenceConfig, FlowTrainConfig
from latent_pmrf.lightning.tasks import TASKS, train
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
                 "model.in_channels=4", "model.out_channels=4", "val_euler_steps=2", "trainer.val_every_n_steps=100",
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
    # EMA without warm-up and a large lr: after 3 steps the EMA (~ the zero-velocity init) and the
    # live weights restore measurably differently (PSNR 4.6e-3 dB apart), so the check below can
    # tell which one was used
    ema_apart = ["optim.ema_warmup=false", "optim.lr=5e-3"]
    cfg = flow_config(faces_dir, vae_dir, pm_file, out, 3, ema_apart)
    train(TASKS["flow"], cfg, convergence_metrics=metrics)
    rows = list(csv.DictReader((out / "convergence.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 3]  # every 2 steps, and at the end
    assert all(np.isfinite(float(r[m])) for r in rows for m in ("psnr", "mmd_dinov2"))
    steps, values = read_curve(out, "convergence/psnr")  # the CSV logger has it too
    assert list(steps) == [2, 3] and values[-1] == pytest.approx(float(rows[-1]["psnr"]), rel=1e-6)

    # The last point was sampled with the EMA weights: recompute it from the checkpoint's EMA
    # state (RestorationPipeline.from_checkpoint) and from its live weights; only the EMA one matches.
    dm = BFRDataModule(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    module = RestorationPipeline.from_checkpoint(last_checkpoint(out)).eval()

    def curve_point(m):
        seed = cfg.convergence.seed  # image i's noise: SeedSequence([seed, i]), whatever the batch
        gens = [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
                for i in range(batch["lq"].shape[0])]
        restored, _ = m.restore(batch["lq"], 2, generator=gens)
        to01 = lambda x: torch.round((x + 1) * 127.5) / 255  # noqa: E731
        return float(psnr(to01(restored), to01(batch["gt"])).mean())

    # abs 5e-5 on a PSNR of ~12.6 dB: float32 sums in another batch order, not another sample
    assert curve_point(module) == pytest.approx(float(rows[-1]["psnr"]), abs=5e-5)
    live = torch.load(last_checkpoint(out), map_location="cpu", weights_only=True)["current_model_state"]
    module.load_state_dict({k.removeprefix("pipeline."): v for k, v in live.items()}, strict=False)
    assert curve_point(module) != pytest.approx(float(rows[-1]["psnr"]), abs=5e-5)

    # resume to step 4: rows 2 and 3 kept, 4 added
    train(TASKS["flow"], flow_config(faces_dir, vae_dir, pm_file, out, 4, ema_apart), convergence_metrics=metrics)
    assert [int(r["step"]) for r in csv.DictReader((out / "convergence.csv").open())] == [2, 3, 4]
    main(["plot-convergence", str(out / "convergence.csv"), "--metric", "mmd_dinov2", "--out", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").stat().st_size > 5000


def test_missing_weights_are_skipped_with_a_warning(faces_dir, tmp_path, frozen_nets, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights"))
    vae_dir, pm_file = frozen_nets
    out = tmp_path / "run"
    cfg = flow_config(faces_dir, vae_dir, pm_file, out, 2, ["convergence.metrics=[dists,psnr]"])
    with pytest.warns(UserWarning, match="dists skipped.*DISTS_weights-f5e65c96.pth|dists skipped.*vgg16"):
        train(TASKS["flow"], cfg)
    rows = list(csv.DictReader((out / "convergence.csv").open()))
    assert list(rows[0]) == ["step", "psnr"] and int(rows[0]["step"]) == 2


class NoisyRestorer(torch.nn.Module):
    """A stand-in pipeline: the LQ plus each image's own generator noise, returned as the
    restoration and as the posterior mean (so IndRMSE, measured against the latter, is 0)."""

    def restore(self, lq, steps, generator):
        noise = torch.cat([torch.randn(lq[i:i + 1].shape, generator=g) for i, g in enumerate(generator)])
        restored = (lq + 0.3 * noise).clamp(-1, 1)
        return restored, restored


def test_convergence_values_do_not_depend_on_the_validation_batch_size(faces_dir):
    from types import SimpleNamespace

    from latent_pmrf.lightning.convergence import ConvergenceCallback
    from latent_pmrf.lightning.restoration_config import BFRDataConfig
    from latent_pmrf.lightning.trainer_config import ImageSourceConfig

    module = SimpleNamespace(pipeline=NoisyRestorer(), device=torch.device("cpu"))
    values = []
    for val_batch_size in (1, 3):
        data = BFRDataConfig(train=[ImageSourceConfig(root=str(faces_dir / "hq"))], val_dir=str(faces_dir / "hq"),
                             crop_size=64, val_batch_size=val_batch_size, num_workers=0)
        callback = ConvergenceCallback(ConvergenceConfig(metrics=["psnr", "ind_rmse"], num_images=3, seed=7), data)
        callback.suite = callback._build(module.device)
        values.append(callback._evaluate(None, module))
    assert values[0] == values[1]
    assert values[0]["ind_rmse"] == 0 and np.isfinite(values[0]["psnr"])


class PooledColours(torch.nn.Module):
    """A stand-in DINOv2 trunk: the "CLS token" is the image's mean colour on a 4x4 grid."""

    def forward_features(self, x):  # (B, 3, H, W) -> (B, 1, 48)
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)[:, None]


class ThreadRanks:
    """``all_gather`` for ranks that are threads of this process: every rank's object, in rank order."""

    def __init__(self, world_size):
        self.barrier = threading.Barrier(world_size, timeout=60)
        self.slots = [None] * world_size
        self.local = threading.local()

    def __call__(self, obj):
        self.slots[self.local.rank] = obj
        self.barrier.wait()
        gathered = list(self.slots)
        self.barrier.wait()
        return gathered


def test_sharded_convergence_equals_one_process(faces_dir, monkeypatch):
    """Two ranks (threads) each restore their shard with each image's own noise and gather values
    and set-metric features: both get exactly the numbers of one process over the whole set."""
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from latent_pmrf.lightning import convergence
    from latent_pmrf.lightning.restoration_config import BFRDataConfig
    from latent_pmrf.lightning.trainer_config import ImageSourceConfig

    module = SimpleNamespace(pipeline=NoisyRestorer(), device=torch.device("cpu"))
    data = BFRDataConfig(train=[ImageSourceConfig(root=str(faces_dir / "hq"))], val_dir=str(faces_dir / "hq"),
                         crop_size=64, val_batch_size=2, num_workers=0)

    def values(trainer, on_rank=None):
        if on_rank is not None:
            ranks.local.rank = on_rank
        metrics = {"psnr": PSNR(), "mmd_dinov2": DINOv2Distance("mmd", DINOv2Features(model=PooledColours(),
                                                                                      image_size=32))}
        callback = convergence.ConvergenceCallback(ConvergenceConfig(num_images=5, seed=7), data, metrics)
        callback.suite = callback._build(module.device)
        return callback._evaluate(trainer, module)

    one_process = values(None)
    ranks = ThreadRanks(2)
    monkeypatch.setattr(convergence, "all_ranks", ranks)
    with ThreadPoolExecutor(2) as pool:  # shards [0, 2) and [2, 5)
        sharded = [f.result() for f in [pool.submit(values, SimpleNamespace(global_rank=r, world_size=2), r)
                                        for r in range(2)]]
    assert sharded[0] == sharded[1] == one_process
    assert np.isfinite(one_process["mmd_dinov2"]) and one_process["mmd_dinov2"] > 0


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
