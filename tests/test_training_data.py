"""Training-data reliability (issues 14 and 17): an image smaller than the crop is skipped and counted
like an unreadable one, or enlarged on request, and the up-front config check warns about it; the
skip counters survive a resume; the VAE data order has its own seed; decoded images can be cached
(issue 16) without changing an item."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latent_pmrf.analysis.run_logs import read_logged_metrics
from latent_pmrf.config import ConfigError
from latent_pmrf.data.bfr_datasets import PairedOnlineDataset
from latent_pmrf.data.degradations import BFRDegradation, degradation_preset
from latent_pmrf.data.image_folder import ImageFiles, ImageFolderCrops, upscale_short_side
from latent_pmrf.data.image_io import ImageReadError, read_image
from latent_pmrf.data.reflection import ReflectionSynthesis
from latent_pmrf.data.sirr_datasets import ReflectionPairDataset, SIRRAugmentConfig, SyntheticReflectionDataset
from latent_pmrf.lightning import tasks
from latent_pmrf.lightning.guards import NonFiniteError
from latent_pmrf.lightning.tasks import TASKS, load_task_config, train
from latent_pmrf.lightning.vae_data import VAEDataModule
from latent_pmrf.lightning.vae_module import VAEModule

REPO = Path(__file__).resolve().parents[1]
VAE_CONFIG = REPO / "configs" / "vae" / "sim_vae_c32.yaml"
CROP = 32
SIZES = {"a": (64, 64), "b": (20, 48), "c": (80, 64)}  # name: (width, height); b is below the crop


def smooth_image(width: int, height: int, phase: float = 0.0) -> np.ndarray:
    """uint8 (H, W, 3) of low frequencies (resampling filters agree on it)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([0.5 + 0.4 * np.sin(x / 5.0 + phase), 0.5 + 0.4 * np.cos(y / 7.0 + phase),
                      (x + y) / (width + height)], axis=-1)
    return np.rint(image * 255).astype(np.uint8)


def write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, (width, height)) in enumerate(sizes.items()):
        Image.fromarray(smooth_image(width, height, phase=i)).save(folder / f"{name}.png")
    return folder


def sirr_pairs(root: Path) -> Path:
    write_images(root / "blended", SIZES)
    write_images(root / "transmission_layer", SIZES)
    return root


NO_RESCALE = SIRRAugmentConfig(crop_size=CROP, short_side_range=None)
DATASETS = {"vae_crops": "image", "bfr_pairs": "gt", "sirr_real_pairs": "gt", "sirr_synthetic": "gt"}  # name: image key


def training_set(name: str, folder: Path, small_images: str, cache: bool = False):
    """Training dataset ``name`` over the images of SIZES in ``folder``, cropping CROP."""
    if name == "vae_crops":
        return ImageFolderCrops([(write_images(folder, SIZES), None)], CROP, small_images=small_images, cache=cache)
    if name == "bfr_pairs":
        return PairedOnlineDataset([(write_images(folder, SIZES), None)], BFRDegradation(degradation_preset("difface")),
                                   CROP, small_images=small_images, cache=cache)
    if name == "sirr_real_pairs":
        return ReflectionPairDataset([(sirr_pairs(folder), None, None)], NO_RESCALE, small_images=small_images,
                                     cache=cache)
    reflections = write_images(folder.with_name("reflection"), {"r": (64, 64)})
    return SyntheticReflectionDataset([(write_images(folder, SIZES), None)], [(reflections, None)],
                                      ReflectionSynthesis(), NO_RESCALE, small_images=small_images, cache=cache)


# ---------------------------------------------------------------------------------------- small images
@pytest.mark.parametrize("name", DATASETS)
def test_image_smaller_than_the_crop_is_skipped_counted_and_named(name, tmp_path, caplog):
    dataset, key = training_set(name, tmp_path / "train", "skip"), DATASETS[name]
    with caplog.at_level(logging.WARNING):
        item = dataset[(0, 1)]  # b.png (20x48)
    assert item["skipped"] == 1 and item[key].shape == (3, CROP, CROP)
    assert "b.png is 20x48" in caplog.text and "smaller than the crop" in caplog.text
    assert dataset[(0, 0)]["skipped"] == dataset[(0, 2)]["skipped"] == 0


@pytest.mark.parametrize("name", DATASETS)
def test_image_smaller_than_the_crop_is_enlarged_with_small_images_upscale(name, tmp_path):
    item, key = training_set(name, tmp_path / "train", "upscale")[(0, 1)], DATASETS[name]
    assert item["skipped"] == 0 and item[key].shape == (3, CROP, CROP)
    if "path" in item:
        assert item["path"].endswith("b.png")


def test_upscale_brings_the_short_side_to_the_crop_and_matches_pil_lanczos():
    image = smooth_image(20, 48)
    enlarged = upscale_short_side(image.astype(np.float32) / 255, CROP)
    assert enlarged.shape == (77, 32, 3)  # 48 * 32/20 = 76.8: aspect kept
    reference = np.asarray(Image.fromarray(image).resize((32, 77), Image.Resampling.LANCZOS)) / 255
    assert np.abs(enlarged - reference).max() < 0.01  # nearest-neighbour is 0.034 away
    wide = upscale_short_side(smooth_image(48, 20).astype(np.float32) / 255, CROP)
    assert wide.shape == (32, 77, 3) and wide.min() >= 0 and wide.max() <= 1
    assert upscale_short_side(enlarged, CROP) is enlarged  # large enough already


def tiny_vae_overrides(folder: Path, out: Path, extra=()) -> list[str]:
    return ["model.block_out_channels=[32,32]", "model.layers_per_block=1", "model.layers_mid_block=1",
            "model.latent_channels=4", "loss.vgg_pretrained=false", f"data.train=[{{root: {folder}}}]",
            "data.val_dir=null", f"data.crop_size={CROP}", "data.batch_size=2", "data.num_workers=0",
            "trainer.accelerator=cpu", "trainer.devices=1", f"trainer.output_dir={out}",
            "trainer.val_every_n_steps=0", "trainer.checkpoint_every_n_steps=1", "trainer.log_every_n_steps=1",
            "trainer.progress_bar=false", *extra]


@pytest.mark.parametrize("policy,fate", [("skip", "skipped and counted in data/skipped_files"),
                                         ("upscale", "enlarged so that their shorter side is 32")])
def test_config_check_warns_with_the_count_and_an_example_of_small_images(policy, fate, tmp_path):
    folder = write_images(tmp_path / "train", {**SIZES, "d": (31, 200)})
    with pytest.warns(UserWarning) as caught:
        load_task_config(VAE_CONFIG, tiny_vae_overrides(folder, tmp_path / "run", [f"data.small_images={policy}"]))
    message = "\n".join(str(w.message) for w in caught)
    assert "data.train[0].root: 2 of the 4 images checked are smaller than the crop 32x32" in message
    assert "b.png (20x48)" in message and fate in message


def test_config_check_reads_headers_only_and_samples_big_folders(tmp_path, monkeypatch):
    folder = write_images(tmp_path / "train", {"a": (64, 64), "b": (20, 48), "c": (80, 64)})
    # d.png: a 16x16 header and half its pixel data, so only a check that decodes nothing sees its size
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / "d.png")
    (folder / "d.png").write_bytes((folder / "d.png").read_bytes()[:400])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(folder / "d.png")

    def check(max_headers: int):
        monkeypatch.setattr(tasks, "MAX_HEADERS_CHECKED", max_headers)
        load_task_config(VAE_CONFIG, tiny_vae_overrides(folder, tmp_path / "run"))

    with pytest.warns(UserWarning, match=r"2 of the 4 images checked are smaller .* e\.g\. \S+b\.png \(20x48\)"):
        check(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        check(2)  # every second file: a, c
    write_images(folder, {f"e{i}": (64, 64) for i in range(4)})  # a b c d e0 e1 e2 e3
    with pytest.warns(UserWarning, match=r"1 of the 3 images checked \(an even sample of its 8\) .*d\.png \(16x16\)"):
        check(3)  # every third file: a, d, e2


def test_small_images_policy_is_checked_by_name(tmp_path):
    folder = write_images(tmp_path / "train", {"a": (64, 64)})
    with pytest.raises(ConfigError, match=r"data\.small_images must be one of \('skip', 'upscale'\), got 'crop'"):
        load_task_config(VAE_CONFIG, tiny_vae_overrides(folder, tmp_path / "run", ["data.small_images=crop"]))


# ---------------------------------------------------------------------------------------- counters on resume
def logged(out: Path, key: str) -> dict[int, float]:
    return {int(r["step"]): float(r[key]) for r in read_logged_metrics(out) if r.get(key)}


def test_skipped_files_count_goes_on_after_a_resume(tmp_path, monkeypatch):
    folder = tmp_path / "train"
    write_images(folder, {f"{i}": (64, 64) for i in range(0, 8, 2)})
    for i in range(1, 8, 2):  # every other file unreadable: its item reads the next one
        (folder / f"{i}.png").write_bytes(b"not an image")
    in_batch = {}  # step -> files skipped for its batch, as the batch itself says
    original = VAEModule.training_step

    def recording(self, batch, batch_idx):
        in_batch[self.global_step] = int(batch["skipped"].sum())
        return original(self, batch, batch_idx)

    monkeypatch.setattr(VAEModule, "training_step", recording)
    for steps in (2, 4):  # the second run resumes from the first one's checkpoint of step 2
        train(TASKS["vae"], load_task_config(VAE_CONFIG, tiny_vae_overrides(folder, tmp_path / "run",
                                                                            [f"trainer.max_steps={steps}"]))[1],
              val_lpips=False)
    assert sorted(in_batch) == [0, 1, 2, 3] and in_batch[0] + in_batch[1] > 0 and in_batch[2] + in_batch[3] > 0
    running = np.cumsum([in_batch[step] for step in range(4)]).tolist()
    assert logged(tmp_path / "run", "data/skipped_files") == dict(enumerate(map(float, running)))


def test_a_run_of_nonfinite_steps_across_a_resume_still_stops_training(tmp_path, monkeypatch):
    folder = write_images(tmp_path / "train", {f"{i}": (64, 64) for i in range(4)})
    original = VAEModule.training_step

    def poisoned(self, batch, batch_idx):  # steps 1 and 2: one before the checkpoint of step 2, one after
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step in (1, 2) else loss

    monkeypatch.setattr(VAEModule, "training_step", poisoned)

    def run(steps: int):
        extra = ["trainer.on_nonfinite=skip", "trainer.max_consecutive_skips=2", f"trainer.max_steps={steps}"]
        return train(TASKS["vae"], load_task_config(VAE_CONFIG, tiny_vae_overrides(folder, tmp_path / "run", extra))[1],
                     val_lpips=False)

    run(2)
    with pytest.raises(NonFiniteError, match=r"step 2: .*2 non-finite steps in a row"):
        run(4)


# ---------------------------------------------------------------------------------------- VAE data seed
def test_vae_data_seed_sets_the_order_and_the_crops(tmp_path):
    folder = write_images(tmp_path / "train", {f"{i}": (64, 64) for i in range(8)})

    def epoch(seed: int) -> tuple[list[str], torch.Tensor]:
        _, cfg = load_task_config(VAE_CONFIG, tiny_vae_overrides(folder, tmp_path / "run", [f"data.seed={seed}"]))
        datamodule = VAEDataModule(cfg.data)
        datamodule.setup("fit")
        batches = list(datamodule.train_dataloader())
        return [p for b in batches for p in b["path"]], datamodule.train_set[(0, 0)]["image"]

    order0, crop0 = epoch(0)
    assert epoch(0)[0] == order0 and torch.equal(epoch(0)[1], crop0)
    order1, crop1 = epoch(1)
    assert order1 != order0 and sorted(order1) == sorted(order0)
    assert not torch.equal(crop1, crop0)
    with pytest.raises(ConfigError, match=r"data\.seed must be >= 0"):
        load_task_config(VAE_CONFIG, tiny_vae_overrides(folder, tmp_path / "run", ["data.seed=-1"]))


def test_sirr_data_config_takes_the_small_images_policy():
    """The SIRR task's config has the same data.small_images switch (checked by name) and hands it on,
    and the same data.cache_images (resumable, for the SIRR task and the two-task flow)."""
    from latent_pmrf.lightning.checkpoints import config_changes
    from latent_pmrf.lightning.sirr_data import SIRRDataConfig

    assert SIRRDataConfig().small_images == "skip" and SIRRDataConfig(small_images="upscale").small_images == "upscale"
    assert SIRRDataConfig().cache_images is False
    assert config_changes({"sirr": {"data": {"cache_images": False}}}, {"sirr": {"data": {"cache_images": True}}}) == {}
    with pytest.raises(ValueError, match="data.small_images"):
        SIRRDataConfig(small_images="stretch")


# ---------------------------------------------------------------------------------------- image cache
@pytest.mark.parametrize("name", DATASETS)
def test_cached_images_give_the_same_items_and_are_decoded_once(name, tmp_path, monkeypatch):
    """data.cache_images: every item (crops, flips, degradations, reflections, a skipped small image)
    equals the uncached one, and a file is decoded once however many epochs read it."""
    from latent_pmrf.data import image_folder

    folder = tmp_path / "train"
    plain = training_set(name, folder, "skip")
    items = [(epoch, index) for epoch in range(3) for index in range(len(SIZES))]
    expected = [plain[item] for item in items]

    decoded = []
    monkeypatch.setattr(image_folder, "read_image", lambda path: decoded.append(str(path)) or read_image(path))
    cached = training_set(name, folder, "skip", cache=True)
    for item, want in zip(items, expected):
        got = cached[item]
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert torch.equal(got[key], value) if torch.is_tensor(value) else got[key] == value, (item, key)
    assert decoded and len(decoded) == len(set(decoded))  # b (too small) read once too, its skip remembered


def test_a_cached_image_is_read_only(tmp_path):
    images = ImageFiles.from_sources([(write_images(tmp_path / "train", {"a": (64, 64)}), None)], cache=True)
    image, _, _ = images.read(0)
    with pytest.raises(ValueError, match="read-only"):
        image[0, 0, 0] = 1.0
    assert images.read(0)[0] is image


@pytest.mark.parametrize("task,datamodule", [("vae", "VAEDataModule"), ("posterior_mean", "BFRDataModule")])
def test_cache_images_switch_reaches_the_training_set_and_may_change_on_resume(task, datamodule, tmp_path):
    from latent_pmrf.lightning import bfr_data, vae_data
    from latent_pmrf.lightning.checkpoints import config_changes

    folder = write_images(tmp_path / "train", {"a": (64, 64), "c": (80, 64)})
    config = REPO / "configs" / ("vae/quickstart.yaml" if task == "vae" else "posterior_mean/quickstart.yaml")
    overrides = [f"data.train=[{{root: {folder}}}]", "data.val_dir=null", f"data.crop_size={CROP}"]
    module = {"VAEDataModule": vae_data.VAEDataModule, "BFRDataModule": bfr_data.BFRDataModule}[datamodule]
    for value in (True, False):
        _, cfg = load_task_config(config, [*overrides, f"data.cache_images={str(value).lower()}"])
        dm = module(cfg.data)
        dm.setup("fit")
        assert (dm.train_set.images.cache is not None) is value
    assert config_changes({"data": {"cache_images": False}}, {"data": {"cache_images": True}}) == {}


# ---------------------------------------------------------------------------------------- extending a run
def test_a_finished_run_given_more_steps_continues_bitwise(tmp_path):
    """max_steps not a multiple of the checkpoint interval: Lightning writes last.ckpt in its
    on_train_end, after the EMA callback has put the EMA weights into the model. That checkpoint
    must still hold the live weights, so that re-running with a larger max_steps continues exactly
    where an uninterrupted run would be (it used to continue from the EMA weights)."""
    folder = write_images(tmp_path / "train", {f"{i}": (64, 64) for i in range(4)})

    def run(out: Path, steps: int) -> dict:
        _, cfg = load_task_config(VAE_CONFIG, tiny_vae_overrides(folder, out, [
            f"trainer.max_steps={steps}", "trainer.checkpoint_every_n_steps=2", "optim.ema_decay=0.5"]))
        train(TASKS["vae"], cfg, val_lpips=False)
        return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)

    extended = run(tmp_path / "a", 3)
    assert any(not torch.equal(extended["state_dict"][k], v) for k, v in extended["current_model_state"].items())
    extended = run(tmp_path / "a", 5)
    straight = run(tmp_path / "b", 5)
    assert extended["global_step"] == straight["global_step"] == 5
    for key in ("state_dict", "current_model_state"):
        for name, value in straight[key].items():
            assert torch.equal(extended[key][name], value), (key, name)
    for a, b in zip(extended["optimizer_states"][0]["state"].values(), straight["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_written_after_training_ends_holds_the_live_weights():
    """EMA.on_train_end puts the EMA weights into the model; a checkpoint written after that (by any
    later on_train_end) must still store the live weights as current_model_state."""
    from latent_pmrf.lightning.ema import EMA

    module = torch.nn.Module()
    module.ema_target, module.net = "net", torch.nn.Linear(3, 2)
    ema = EMA(decay=0.5)
    ema.setup(None, module, "fit")
    live = {k: v.clone() for k, v in module.net.state_dict().items()}
    with torch.no_grad():
        for p in ema.average.module.parameters():
            p.add_(1.0)  # an average that differs from the live weights
    ema.on_train_end(None, module)
    checkpoint = {"state_dict": {f"net.{k}": v.clone() for k, v in module.net.state_dict().items()}}  # as Lightning dumps it
    ema.on_save_checkpoint(None, module, checkpoint)
    for k, v in live.items():
        assert torch.equal(checkpoint["current_model_state"][f"net.{k}"], v)
        assert torch.equal(checkpoint["state_dict"][f"net.{k}"], v + 1.0)


# ---------------------------------------------------------------------------------------- whole images
def test_whole_images_of_two_sizes_are_refused_before_training_naming_both(tmp_path):
    """data.crop_size: null batches whole images; two sizes used to fail at the first batch with a
    stacking error that named no file."""
    folder = write_images(tmp_path / "train", {"a": (64, 64), "b": (64, 64), "c": (80, 48)})
    config = REPO / "configs" / "posterior_mean" / "quickstart.yaml"
    overrides = [f"data.train=[{{root: {folder}}}]", "data.val_dir=null", "data.crop_size=null"]
    with pytest.raises(ConfigError, match=r"c\.png \(80x48\).*a\.png \(64x64\).*set data\.crop_size \(at most 48"):
        load_task_config(config, overrides)
    (folder / "c.png").unlink()
    load_task_config(config, overrides)  # one size: accepted


def test_the_dataset_names_a_whole_image_of_another_size(tmp_path):
    """The same rule where the headers were not all checked (big folders are sampled)."""
    folder = write_images(tmp_path / "train", {"a": (64, 64), "c": (80, 48)})
    dataset = PairedOnlineDataset([(folder, None)], BFRDegradation(degradation_preset("difface")), None)
    assert dataset[(0, 0)]["gt"].shape == (3, 64, 64)
    with pytest.raises(ValueError, match=r"c\.png is 80x48 but .*a\.png is 64x64"):
        dataset[(0, 1)]
