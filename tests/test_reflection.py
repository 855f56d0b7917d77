"""Reflection synthesis (DSRNet/RDNet/ERRNet recipe) against formulas recomputed here with NumPy and
SciPy, the α-mix, the SIRR datasets and their seeding, the training mix, and `synth-reflection`."""

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import convolve2d
from scipy.stats import truncnorm
from skimage import data

from latent_pmrf.cli.main import main
from latent_pmrf.data.image_io import ImageReadError, read_image
from latent_pmrf.data.reflection import (ReflectionParams, ReflectionSynthesis, ReflectionSynthesisConfig,
                                         alpha_mix, reflection_preset)
from latent_pmrf.data.sirr_datasets import (REAL20_STEMS, MixedSourcesDataset, ReflectionPairDataset,
                                            SIRRAugmentConfig, SyntheticReflectionDataset)
from latent_pmrf.lightning.sirr_data import SIRRDataConfig, SIRRSourceConfig, build_sirr_datasets
from latent_pmrf.lightning.trainer_config import ImageSourceConfig


def unit(photo: np.ndarray, size: int = 96, offset: int = 0) -> np.ndarray:
    return photo[offset : offset + size, offset : offset + size].astype(np.float32) / 255.0


def blur_reference(image: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """Zero-padded 'same' convolution with a normalised 2-D Gaussian written out here."""
    x = np.arange(k) - (k - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    kernel = np.outer(g, g)
    return np.stack([convolve2d(image[..., c].astype(np.float64), kernel, mode="same") for c in range(3)], axis=2)


def expected_blend(t, r, k, sigma, gain, b, screen, gamma=1.3):
    t_mix = t.astype(np.float64) * np.asarray(gain, np.float64)
    r_mix = b * blur_reference(r, k, sigma)
    if screen:
        return t_mix + r_mix - t_mix * r_mix, r_mix
    total = t_mix + r_mix
    if (total > 1).any():
        m = gamma * (total[total > 1].mean() - 1)
        r_mix = np.clip(r_mix - m, 0, 1)
        total = np.clip(t_mix + r_mix, 0, 1)
    return total, r_mix


@pytest.fixture(scope="module")
def layers():
    return unit(data.astronaut(), 96, 100), unit(data.coffee(), 96, 150)


# ------------------------------------------------------------------------------ formulas
@pytest.mark.parametrize("k,sigma", [(5, 2.0), (11, 4.7), (7, 3.3)])
def test_blur_is_a_zero_padded_gaussian_convolution(layers, k, sigma):
    from latent_pmrf.data.reflection import blur_reflection

    _, r = layers
    np.testing.assert_allclose(blur_reflection(r, k, sigma), blur_reference(r, k, sigma), atol=2e-6)


@pytest.mark.parametrize("screen", [True, False])
@pytest.mark.parametrize("gain", [(0.9, 0.9, 0.9), (1.2, 1.05, 0.95)])
def test_synthesis_matches_the_formulas_on_fixed_parameters(layers, screen, gain):
    t, r = layers
    synthesis = ReflectionSynthesis()
    params = ReflectionParams(9, 3.1, np.array(gain, np.float32), 0.8, screen)
    out = synthesis.apply(t, r, params)
    blended, reflection = expected_blend(t, r, 9, 3.1, np.float32(gain), np.float32(0.8), screen)
    if not screen:
        assert (t * np.float32(gain) + 0.8 * blur_reference(r, 9, 3.1) > 1).any(), "the overflow branch must run"
    np.testing.assert_allclose(out.blended, np.clip(blended, 0, 1), atol=1e-5)
    np.testing.assert_allclose(out.reflection, reflection, atol=1e-5)
    np.testing.assert_array_equal(out.transmission, t)  # the target is the unscaled T
    assert out.blended.dtype == np.float32 and out.blended.min() >= 0 and out.blended.max() <= 1


def test_additive_without_overflow_is_the_plain_sum(layers):
    t, r = (0.4 * x for x in layers)
    out = ReflectionSynthesis().apply(t, r, ReflectionParams(5, 2.0, np.ones(3, np.float32), 1.0, False))
    np.testing.assert_allclose(out.blended, t + blur_reference(r, 5, 2.0), atol=1e-5)


def test_gain_on_target_scales_and_clips_the_target(layers):
    t, r = layers
    synthesis = ReflectionSynthesis.from_preset("rdnet")
    assert synthesis.config.transmission_gain == "truncnorm" and synthesis.config.gain_on_target
    gain = np.array([1.3, 1.0, 0.9], np.float32)
    out = synthesis.apply(t, r, ReflectionParams(7, 2.5, gain, 0.6, True))
    np.testing.assert_allclose(out.transmission, np.clip(t * gain, 0, 1), atol=1e-7)


def test_errnet_preset_is_its_additive_recipe(layers):
    t, r = layers
    synthesis = ReflectionSynthesis.from_preset("errnet")
    params = synthesis.sample_params(np.random.default_rng(3))
    assert (params.kernel_size, params.reflection_scale, params.screen) == (11, 1.0, False)
    np.testing.assert_array_equal(params.transmission_gain, np.ones(3, np.float32))
    out = synthesis.apply(t, r, params)
    np.testing.assert_allclose(out.blended, expected_blend(t, r, 11, params.sigma, 1.0, 1.0, False)[0], atol=1e-5)


def test_parameter_draws_follow_the_recipe():
    rng = np.random.default_rng(0)
    draws = [ReflectionSynthesis().sample_params(rng) for _ in range(4000)]
    sizes = np.array([p.kernel_size for p in draws])
    for size, prob in zip([5, 7, 9, 11], [0.1, 0.2, 0.3, 0.4], strict=True):
        assert abs((sizes == size).mean() - prob) < 0.025
    sigma, a, b = (np.array([getattr(p, k) if k != "a" else p.transmission_gain[0] for p in draws])
                   for k in ("sigma", "a", "reflection_scale"))
    assert 2 <= sigma.min() and sigma.max() <= 5 and abs(sigma.mean() - 3.5) < 0.05
    assert 0.8 <= a.min() and a.max() <= 1 and all(np.all(p.transmission_gain == p.transmission_gain[0]) for p in draws)
    assert 0.4 <= b.min() and b.max() <= 1 and abs(b.mean() - 0.7) < 0.01
    assert abs(np.mean([p.screen for p in draws]) - 0.7) < 0.025


def test_truncated_normal_gains_per_channel():
    cfg = reflection_preset("rdnet")
    rng = np.random.default_rng(1)
    gains = np.stack([ReflectionSynthesis(cfg).sample_params(rng).transmission_gain for _ in range(1500)])
    for c, (mean, std, low, high) in enumerate(cfg.truncnorm_gains):
        assert low <= gains[:, c].min() and gains[:, c].max() <= high
        expected = truncnorm.mean((low - mean) / std, (high - mean) / std, loc=mean, scale=std)
        assert abs(gains[:, c].mean() - expected) < 0.01
    assert np.corrcoef(gains.T)[0, 1] < 0.1  # independent channels


@pytest.mark.parametrize("key,value,match", [
    ("screen_prob", 1.2, "screen_prob"), ("kernel_probs", [0.5, 0.5, 0.5, 0.5], "kernel_probs"),
    ("kernel_sizes", [4, 7, 9, 11], "kernel_sizes"), ("sigma_range", [5.0, 2.0], "sigma_range"),
    ("reflection_scale_range", [1.0, 0.4], "reflection_scale_range"),
    ("transmission_gain", "gamma", "transmission_gain"),
    ("truncnorm_gains", [[1.0, 0.1, 0.9, 1.1]], "truncnorm_gains")])
def test_config_checks_name_the_key(key, value, match):
    with pytest.raises(ValueError, match=match):
        ReflectionSynthesisConfig(**{key: value})


def test_alpha_mix_is_exact():
    rng = np.random.default_rng(0)
    b, r = rng.random((4, 3, 8, 8)), rng.random((4, 3, 8, 8))
    alpha = np.array([0.0, 0.25, 0.7, 1.0])
    mixed = alpha_mix(torch.from_numpy(b), torch.from_numpy(r), torch.from_numpy(alpha))
    for i in range(4):
        np.testing.assert_array_equal(mixed[i].numpy(), (1 - alpha[i]) * b[i] + alpha[i] * r[i])
    np.testing.assert_array_equal(mixed[0].numpy(), b[0])
    np.testing.assert_array_equal(mixed[3].numpy(), r[3])
    np.testing.assert_array_equal(alpha_mix(b[1], r[1], 0.3), 0.7 * b[1] + 0.3 * r[1])


# ------------------------------------------------------------------------------ datasets
def save_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


@pytest.fixture(scope="module")
def photo_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sirr_photos")
    for i, photo in enumerate([data.astronaut(), data.chelsea(), data.coffee()]):
        save_png(root / "background" / f"b{i}.png", photo[:160, :200])
    for i, photo in enumerate([data.rocket(), data.immunohistochemistry()]):
        save_png(root / "reflection" / f"r{i}.png", photo[:120, :150])
    return root


def make_pairs(folder, names, photo, size=(70, 90), misaligned: str | None = None):
    """blended = transmission/2 + 0.3 (a known relation, so alignment and geometry can be checked)."""
    rng = np.random.default_rng(len(names))
    for name in names:
        top, left = rng.integers(0, 100, 2)
        transmission = photo[top : top + size[0], left : left + size[1]]
        save_png(folder / "transmission_layer" / f"{name}.png", transmission)
        blended = (transmission // 2 + 76).astype(np.uint8)
        if name == misaligned:
            blended = np.asarray(Image.fromarray(blended).resize((size[1] + 6, size[0] + 4)))
        save_png(folder / "blended" / f"{name}.jpg" if name == "3" else folder / "blended" / f"{name}.png", blended)


def test_synthetic_items_are_seeded_in_range_and_keep_the_unscaled_target(photo_folders):
    synthesis = ReflectionSynthesis()
    augment = SIRRAugmentConfig(crop_size=64, short_side_range=[64, 100])
    dataset = SyntheticReflectionDataset([(photo_folders / "background", None)], [(photo_folders / "reflection", None)],
                                         synthesis, augment, seed=5)
    item = dataset[(2, 1)]
    assert set(item) == {"lq", "gt", "index", "skipped"} and item["index"] == 1 and item["skipped"] == 0
    assert item["lq"].shape == item["gt"].shape == (3, 64, 64)
    assert item["lq"].min() >= -1 and item["lq"].max() <= 1
    again = dataset[(2, 1)]
    assert torch.equal(item["lq"], again["lq"]) and torch.equal(item["gt"], again["gt"])
    assert not torch.equal(item["lq"], dataset[(3, 1)]["lq"])  # another epoch, other draws
    dataset.epoch = 2
    assert torch.equal(dataset[1]["lq"], item["lq"])  # a plain index uses dataset.epoch

    whole = SyntheticReflectionDataset([(photo_folders / "background", None)], None, synthesis,
                                       SIRRAugmentConfig(crop_size=None, short_side_range=None), seed=0, train=False)
    sample = whole.synthesize(0, np.random.default_rng(0))
    assert sample.reflection != sample.background  # drawn from the other backgrounds
    np.testing.assert_array_equal(whole[0]["gt"].numpy(),
                                  read_image(photo_folders / "background" / "b0.png").transpose(2, 0, 1) * 2 - 1)


def test_pair_dataset_validation_aligns_to_32_and_training_moves_both_alike(tmp_path):
    folder = tmp_path / "real20_420"
    make_pairs(folder, ["3", "4", "9"], data.astronaut(), misaligned="4")
    val = ReflectionPairDataset([(folder, ("3", "4"), None)], SIRRAugmentConfig(crop_size=None, short_side_range=None),
                                train=False)
    assert len(val) == 2
    item = val[1]  # name "4": blended saved at another size
    truth = Image.open(folder / "transmission_layer" / "4.png")
    expected = np.asarray(truth.resize((64, 64)), np.float32) / 255  # PIL's default filter, floor 32 of 90x70
    np.testing.assert_allclose(item["gt"].numpy().transpose(1, 2, 0), expected * 2 - 1, atol=1e-6)
    assert item["lq"].shape == (3, 64, 64)

    train = ReflectionPairDataset([(folder, None, None)], SIRRAugmentConfig(crop_size=48, short_side_range=[48, 80]),
                                  seed=1)
    for index in (0, 2):  # 2 is a PNG pair, 0 the JPEG one: blended ≈ transmission/2 + 0.3 after any geometry
        for epoch in range(4):
            item = train[(epoch, index)]
            lq, gt = (item[k].numpy() * 0.5 + 0.5 for k in ("lq", "gt"))
            assert np.abs(lq - (gt / 2 + 76 / 255)).mean() < 0.02, (epoch, index)


def test_pair_folder_errors_name_the_folder(tmp_path):
    folder = tmp_path / "pairs"
    make_pairs(folder, ["5", "6"], data.coffee())
    (folder / "blended" / "6.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"pairs.*only one of blended/ and transmission_layer/.*6"):
        ReflectionPairDataset([(folder, None, None)])
    with pytest.raises(FileNotFoundError, match="20 listed images"):
        ReflectionPairDataset([(folder, REAL20_STEMS, None)])
    with pytest.raises(FileNotFoundError, match=r"pairs/blended has no blended/"):
        ReflectionPairDataset([(folder / "blended", None, None)])


def test_an_unreadable_training_pair_is_skipped_whole(tmp_path, caplog):
    folder = tmp_path / "pairs"
    make_pairs(folder, ["5", "6", "7"], data.chelsea())
    (folder / "blended" / "6.png").write_bytes(b"not a png")
    augment = SIRRAugmentConfig(crop_size=32, short_side_range=None)
    train = ReflectionPairDataset([(folder, None, None)], augment, seed=0)
    item = train[(0, 1)]
    assert item["skipped"] == 1 and "6.png" in caplog.text
    lq, gt = (item[k].numpy() * 0.5 + 0.5 for k in ("lq", "gt"))
    assert np.abs(lq - (gt / 2 + 76 / 255)).mean() < 0.01  # the next pair, both halves
    val = ReflectionPairDataset([(folder, None, None)], augment, train=False)
    with pytest.raises(ImageReadError, match="6.png"):
        val[1]


class Marker:
    """A source whose items say which source and index they are."""

    def __init__(self, value, length):
        self.value, self.length = value, length

    def __len__(self):
        return self.length

    def load(self, index, rng):
        return {"lq": torch.full((1,), float(self.value)), "gt": torch.zeros(1), "index": index, "skipped": 0,
                "inner": index}


def test_mix_draws_sources_by_ratio_and_is_seeded():
    mix = MixedSourcesDataset([Marker(0, 7), Marker(1, 3), Marker(2, 5)], [0.6, 0.2, 0.2], length=3000, seed=3)
    values = np.array([mix[(0, i)]["lq"].item() for i in range(3000)])
    for value, ratio in enumerate([0.6, 0.2, 0.2]):
        assert abs((values == value).mean() - ratio) < 0.03
    inner = [mix[(0, i)]["inner"] for i in range(3000) if values[i] == 1]
    assert set(inner) == {0, 1, 2}
    assert mix[(0, 17)]["index"] == 17 and mix[(4, 17)] == mix[(4, 17)]
    with pytest.raises(ValueError, match="sum to 1"):
        MixedSourcesDataset([Marker(0, 1), Marker(1, 1)], [0.6, 0.6], length=4)


def test_data_config_builds_the_training_mix_and_validation(photo_folders, tmp_path):
    root = tmp_path / "sirr"
    make_pairs(root / "train" / "real", ["a", "b"], data.astronaut())
    make_pairs(root / "test" / "real20_420", list(REAL20_STEMS), data.coffee(), size=(40, 70))
    cfg = SIRRDataConfig(
        root=str(root), epoch_length=12, val=["test/real20_420"], val_crop_size=32,
        augment=SIRRAugmentConfig(crop_size=32, short_side_range=[40, 60]),
        sources=[SIRRSourceConfig("synthetic", 0.5, background=[ImageSourceConfig(str(photo_folders / "background"))],
                                  reflection=[ImageSourceConfig(str(photo_folders / "reflection"))]),
                 SIRRSourceConfig("real", 0.5, pairs=["train/real"])])
    train, val = build_sirr_datasets(cfg)
    assert len(train) == 12 and len(val) == 20
    from torch.utils.data import DataLoader

    from latent_pmrf.data.samplers import EpochIndexSampler

    batch = next(iter(DataLoader(train, batch_size=4, sampler=EpochIndexSampler(len(train), seed=0))))
    assert set(batch) == {"lq", "gt", "index", "skipped"} and batch["lq"].shape == (4, 3, 32, 32)
    assert val[0]["gt"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="sum to 1"):
        replace(cfg, sources=cfg.sources[:1])
    with pytest.raises(ValueError, match="either pairs"):
        SIRRSourceConfig("both", 1.0, pairs=["x"], background=[ImageSourceConfig("y")])
    assert [s.ratio for s in SIRRDataConfig().sources] == [0.6, 0.2, 0.2]


# ------------------------------------------------------------------------------ synth-reflection
def test_synth_reflection_writes_the_layout_reproducibly(photo_folders, tmp_path):
    args = ["synth-reflection", "--background", str(photo_folders / "background"), "--reflection",
            str(photo_folders / "reflection"), "--n", "4", "--seed", "7"]
    main([*args, "--output", str(tmp_path / "a")])
    main([*args, "--output", str(tmp_path / "b")])
    names = [f"{i:05d}.png" for i in range(4)]
    for folder in ("blended", "transmission_layer", "reflection_layer"):
        assert sorted(p.name for p in (tmp_path / "a" / folder).iterdir()) == names
        for name in names:
            a, b = (tmp_path / d / folder / name for d in "ab")
            assert a.read_bytes() == b.read_bytes()
            assert Image.open(a).mode == "RGB"
    rows = list(csv.DictReader((tmp_path / "a" / "synthesis.csv").open()))
    assert [r["name"] for r in rows] == names
    assert [r["background"].rsplit("/", 1)[-1] for r in rows] == ["b0.png", "b1.png", "b2.png", "b0.png"]
    for row in rows:  # the written layers blend into the written input (8-bit rounding aside)
        blended, t, r = (read_image(tmp_path / "a" / f / row["name"]).astype(np.float64)
                         for f in ("blended", "transmission_layer", "reflection_layer"))
        t_mix = t * float(row["transmission_gain"].split()[0])
        expected = t_mix + r - t_mix * r if row["blend"] == "screen" else np.clip(t_mix + r, 0, 1)
        assert np.abs(blended - expected).max() < 2.5 / 255, row
        assert t.shape == (160, 200, 3)
