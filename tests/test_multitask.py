"""One flow model for faces and reflections (issue 13): BFR and SIRR items mixed with per-task ratios,
a learned task embedding trained with the velocity net, `restore --task` switching by name."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import TINY_SWINIR_CFG, save_tiny_frozen_nets

from latent_pmrf.analysis.run_logs import last_checkpoint
from latent_pmrf.cli.main import main
from latent_pmrf.data.reflection import alpha_mix
from latent_pmrf.data.task_mix import TaskMixDataset
from latent_pmrf.flow import RestorationPipeline
from latent_pmrf.lightning.tasks import load_task_config, train
from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

REPO = Path(__file__).resolve().parents[1]


class Numbers(torch.utils.data.Dataset):
    def __init__(self, value, n):
        self.value, self.n = value, n

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        epoch, index = item
        return {"lq": torch.full((1,), float(self.value)), "gt": torch.zeros(1), "skipped": 0, "index": index}


def test_task_mix_draws_by_ratio_and_tags_items():
    mix = TaskMixDataset([Numbers(0, 5), Numbers(1, 7)], [0.25, 0.75], length=4000, seed=3)
    items = [mix[(0, i)] for i in range(4000)]
    tasks = np.array([it["task"] for it in items])
    assert abs(tasks.mean() - 0.75) < 0.03
    assert all(float(it["lq"]) == it["task"] for it in items)  # each item comes from its task's dataset
    assert [mix[(0, i)]["task"] for i in range(20)] == tasks[:20].tolist()  # depends on (seed, epoch, index) only
    assert set(items[0]) == {"lq", "gt", "skipped", "path", "index", "task"}



@pytest.mark.parametrize("datasets, ratios, message", [
    ([5, 0], [0.5, 0.5], r"task\(s\) \[1\] have a ratio > 0 but no items"),
    ([5, 7], [0.5, 0.6], "task ratios must be >= 0 and sum to 1"),
    ([5], [0.5, 0.5], "need one ratio per task, got 2 ratio"),
])
def test_task_mix_refuses_a_mixture_it_cannot_draw(datasets, ratios, message):
    with pytest.raises(ValueError, match=message):
        TaskMixDataset([Numbers(k, n) for k, n in enumerate(datasets)], ratios, length=10)
    TaskMixDataset([Numbers(0, 5), Numbers(1, 0)], [1.0, 0.0], length=10)[(0, 0)]  # an empty task never drawn is fine

@pytest.fixture
def multitask_run(tmp_path, faces_dir):
    save_tiny_frozen_nets(tmp_path)
    sirr_root = tmp_path / "sirr"
    (sirr_root / "backgrounds").mkdir(parents=True)
    for i, path in enumerate(sorted((faces_dir / "hq").glob("*.png"))[:6]):
        Image.open(path).convert("RGB").resize((96, 96)).save(sirr_root / "backgrounds" / f"{i}.png")
    overrides = [
        f"vae={tmp_path / 'vae'}", f"posterior_mean.checkpoint={tmp_path / 'pm.pth'}",
        *(f"posterior_mean.model.{k}={v}" for k, v in TINY_SWINIR_CFG.items()),
        "model.preset=hdit_latent_pmrf",
        "model.levels=[{depth: 1, width: 32, d_head: 16, kernel_size: 3, attention: neighborhood},"
        "{depth: 1, width: 64, d_head: 16, attention: global}]", "model.mapping_width=32",
        "model.in_channels=4", "model.out_channels=4", "model.task_embedding.init=random", "val_euler_steps=2",
        f"data.train=[{{root: {faces_dir / 'hq'}}}]", "data.val_dir=null", "data.crop_size=64", "data.batch_size=4",
        "data.num_workers=0", "convergence.every_n_steps=0",
        f"sirr.data.root={sirr_root}", "sirr.data.sources=[{name: synthetic, ratio: 1.0, background: [{root: backgrounds}]}]",
        "sirr.data.val=[]", "sirr.data.augment.crop_size=64", "sirr.data.augment.short_side_range=[64,96]",
        "sirr.ratio=0.5", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true",
        f"trainer.output_dir={tmp_path / 'run'}", "trainer.max_steps=3", "trainer.val_every_n_steps=0",
        "trainer.checkpoint_every_n_steps=3", "trainer.log_every_n_steps=1", "trainer.progress_bar=false",
    ]
    task, cfg = load_task_config(REPO / "configs/latent_pmrf/ffhq512_c32.yaml", overrides)
    assert cfg.model.task_embedding.tasks == ["bfr", "sirr"]  # follows the data's tasks
    return train(task, cfg), sirr_root


def test_two_task_flow_trains_the_embedding_and_restores_by_task(multitask_run, tmp_path):
    run, sirr_root = multitask_run
    ckpt = torch.load(last_checkpoint(run), map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["pipeline"]["tasks"] == ["bfr", "sirr"]
    assert ckpt["hyper_parameters"]["pipeline"]["posterior_mean"]["sirr"] is None  # identity f for SIRR
    live = ckpt["current_model_state"]["pipeline.velocity.task_emb.weight"]
    pipeline = RestorationPipeline.from_checkpoint(last_checkpoint(run))
    assert pipeline.multi_task and pipeline.tasks == ["bfr", "sirr"]
    assert live.abs().sum() > 0 and not torch.equal(live, pipeline.velocity.task_emb.weight.detach())  # EMA != live

    # the embedding steers the restoration: the same input and noise, another task, another output
    lq = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        pipeline.velocity.task_emb.weight[1] += 1.0  # make the tasks clearly apart for this check
    a, _ = pipeline.restore(lq, 2, generator=torch.Generator().manual_seed(0), task="bfr")
    b, _ = pipeline.restore(lq, 2, generator=torch.Generator().manual_seed(0), task="sirr")
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match=r"unknown task 'deblur': this model restores \['bfr', 'sirr'\]"):
        pipeline.restore(lq, 2, task="deblur")
    pipeline.save_pretrained(tmp_path / "saved")  # the embedding survives save/load
    again = RestorationPipeline.from_pretrained(tmp_path / "saved")
    assert again.tasks == ["bfr", "sirr"] and torch.equal(again.velocity.task_emb.weight, pipeline.velocity.task_emb.weight)
    c, _ = again.restore(lq, 2, generator=torch.Generator().manual_seed(0), task="sirr")
    assert torch.equal(b, c)

    # restore --task sirr end to end on a synthetic mixture
    backgrounds = sorted((sirr_root / "backgrounds").glob("*.png"))
    b_img, r_img = (np.asarray(Image.open(p), np.float64) / 255 for p in backgrounds[:2])
    mixture = alpha_mix(b_img, r_img, 0.35)
    (tmp_path / "in").mkdir()
    Image.fromarray(np.round(mixture[:64, :64] * 255).astype(np.uint8)).save(tmp_path / "in" / "mix.png")
    main(["restore", "--ckpt", str(last_checkpoint(run)), "--input", str(tmp_path / "in"), "--output",
          str(tmp_path / "out"), "--steps", "2", "--task", "sirr", "--device", "cpu", "--save-posterior-mean"])
    restored = np.asarray(Image.open(tmp_path / "out" / "restored" / "mix.png"))
    assert restored.shape == (64, 64, 3)
    # SIRR's f is the identity: the "posterior mean" written is the input itself
    posterior = np.asarray(Image.open(tmp_path / "out" / "posterior_mean" / "mix.png"))
    np.testing.assert_array_equal(posterior, np.asarray(Image.open(tmp_path / "in" / "mix.png")))
    with pytest.raises(SystemExit):
        main(["restore", "--ckpt", str(last_checkpoint(run)), "--input", str(tmp_path / "in"), "--output",
              str(tmp_path / "out2"), "--task", "deblur", "--device", "cpu"])
    assert not list((tmp_path / "out2").rglob("*.png"))  # refused before any image was restored


def test_single_task_checkpoint_rejects_another_task(tmp_path):
    from latent_pmrf.models.hdit import HDiT, HDiTConfig

    velocity = HDiT(HDiTConfig(patch_size=2, mapping_width=32, levels=[
        dict(depth=1, width=32, d_head=16, kernel_size=3), dict(depth=1, width=64, d_head=16, attention="global")]))
    pipeline = RestorationPipeline(SwinIR(SwinIRConfig(**TINY_SWINIR_CFG)), velocity, None, source_noise_std=0.2)
    pipeline.save_pretrained(tmp_path / "p")
    again = RestorationPipeline.from_pretrained(tmp_path / "p")
    assert again.tasks == ["bfr"] and not again.multi_task
    with pytest.raises(ValueError, match=r"unknown task 'sirr': this model restores \['bfr'\]"):
        again.restore(torch.zeros(1, 3, 32, 32), 1, task="sirr")
    again.restore(torch.zeros(1, 3, 32, 32), 1, task="bfr")  # its own task by name is fine
