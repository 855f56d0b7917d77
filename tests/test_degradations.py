"""The DifFace/GFPGAN blind face degradation: parameter distributions, determinism, and the output
against an independent BasicSR-style reference (BGR, OpenCV's own float->uint8 JPEG path, scipy
kernel)."""

import math
import pickle

import cv2
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from latent_pmrf.data.degradations import (
    BFRDegradation, DegradationConfig, DegradationParams, bivariate_gaussian_kernel, jpeg_bgr)

N_DRAWS = 4000


@pytest.fixture(scope="module")
def difface_draws():
    deg = BFRDegradation.from_preset("difface")
    rng = np.random.default_rng(123)
    return [deg.sample_params(rng) for _ in range(N_DRAWS)]


def photo(h: int = 96, w: int = 80, seed: int = 0) -> np.ndarray:
    """A smooth colour image with edges (random noise would hide blur/JPEG mistakes less well)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    img = np.stack([0.5 + 0.4 * np.sin(x / 7 + 1), 0.5 + 0.4 * np.cos(y / 5), (x + y) / (h + w)], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 2] = rng.random(3)
    return np.clip(img, 0, 1).astype(np.float32)


# ----------------------------------------------------------------- sampled ranges and proportions
def test_difface_ranges_and_proportions(difface_draws):
    p = difface_draws
    sigmas = np.array([d.sigma_x for d in p] + [d.sigma_y for d in p if d.kernel_type == "aniso"])
    assert sigmas.min() >= 0.1 and sigmas.max() <= 15.0
    assert np.mean(sigmas) == pytest.approx(7.55, abs=0.25)  # U[0.1, 15]
    iso = np.mean([d.kernel_type == "iso" for d in p])
    assert iso == pytest.approx(0.5, abs=0.03)
    assert all(d.sigma_x == d.sigma_y and d.rotation == 0 for d in p if d.kernel_type == "iso")
    rot = np.array([d.rotation for d in p if d.kernel_type == "aniso"])
    assert rot.min() >= -math.pi and rot.max() <= math.pi and abs(rot.mean()) < 0.15
    scales = np.array([d.scale for d in p])
    assert scales.min() >= 0.8 and scales.max() <= 32 and scales.mean() == pytest.approx(16.4, abs=0.5)
    noise = np.array([d.noise_std for d in p])
    assert noise.min() >= 0 and noise.max() <= 20 / 255 and noise.mean() == pytest.approx(10 / 255, abs=0.4 / 255)
    q = np.array([d.jpeg_quality for d in p])
    assert q.min() == 30 and q.max() == 99 and q.dtype.kind == "i"  # int(U[30, 100]) never reaches 100
    assert np.mean([d.to_gray for d in p]) == pytest.approx(0.01, abs=0.006)
    assert np.mean([d.hflip for d in p]) == pytest.approx(0.5, abs=0.03)
    assert all(d.color_shift is None and d.color_jitter is None for d in p)


def test_kernels_are_41x41_normalised_and_match_the_gaussian_density(difface_draws):
    for d in difface_draws[:50]:
        assert d.kernel.shape == (41, 41)
        assert d.kernel.sum() == pytest.approx(1.0, abs=1e-12)
    # independent: scipy's bivariate normal density on the integer grid centred at 0
    sx, sy, theta = 3.0, 7.5, 0.6
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([sx**2, sy**2]) @ rot.T
    xs = np.arange(-20, 21)
    grid = np.stack(np.meshgrid(xs, xs), axis=-1)  # [..., 0] = x (column), [..., 1] = y (row)
    ref = multivariate_normal(mean=[0, 0], cov=cov).pdf(grid)
    ref /= ref.sum()
    np.testing.assert_allclose(bivariate_gaussian_kernel(41, sx, sy, theta), ref, rtol=1e-10, atol=1e-15)


def test_gfpgan_preset_ranges():
    deg = BFRDegradation.from_preset("gfpgan")
    rng = np.random.default_rng(0)
    p = [deg.sample_params(rng) for _ in range(2000)]
    assert max(d.sigma_x for d in p) <= 10 and max(d.scale for d in p) <= 8
    assert min(d.jpeg_quality for d in p) >= 60
    assert np.mean([d.color_shift is not None for d in p]) == pytest.approx(0.3, abs=0.04)
    assert max(np.abs(d.color_shift).max() for d in p if d.color_shift is not None) <= 20 / 255
    jit = [d.color_jitter for d in p if d.color_jitter is not None]
    assert len(jit) / len(p) == pytest.approx(0.3, abs=0.04)
    assert all(sorted(name for name, _ in j) == ["brightness", "contrast", "hue", "saturation"] for j in jit)


def test_generic_config_and_its_errors():
    deg = BFRDegradation.from_dict({"preset": "difface", "blur_prob": 0.0, "jpeg_range": [90, 95]})
    rng = np.random.default_rng(0)
    p = [deg.sample_params(rng) for _ in range(200)]
    assert all(d.kernel is None for d in p) and all(90 <= d.jpeg_quality <= 94 for d in p)
    with pytest.raises(KeyError, match="blur_sigmas"):
        BFRDegradation.from_dict({"blur_sigmas": [1, 2]})
    with pytest.raises(KeyError, match="unknown degradation preset 'nope'"):
        BFRDegradation.from_preset("nope")
    with pytest.raises(ValueError, match="noise_range"):
        DegradationConfig(noise_range=[5, 1])
    with pytest.raises(ValueError, match="kernel_list"):
        DegradationConfig(kernel_list=["sinc"], kernel_prob=[1.0])


# ----------------------------------------------------------------- the pipeline vs a reference
def basicsr_reference(img_rgb: np.ndarray, p: DegradationParams, noise_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GFPGAN's FFHQDegradationDataset steps on a BGR image, written independently: OpenCV does the
    float->uint8 conversion inside imencode, gray via BGR2GRAY + np.tile, rounding at the end."""
    img = np.ascontiguousarray(img_rgb[..., ::-1])
    if p.hflip:
        img = cv2.flip(img, 1)
    h, w = img.shape[:2]
    out = cv2.filter2D(img, -1, p.kernel)
    out = cv2.resize(out, (int(w // p.scale), int(h // p.scale)), interpolation=cv2.INTER_LINEAR)
    out = np.clip(out + noise_bgr * np.float32(p.noise_std), 0, 1)
    _, buf = cv2.imencode(".jpg", np.clip(out, 0, 1) * 255.0, [int(cv2.IMWRITE_JPEG_QUALITY), p.jpeg_quality])
    out = np.float32(cv2.imdecode(buf, 1)) / 255.0
    out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    gt = img
    if p.to_gray:
        out = np.tile(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)[:, :, None], [1, 1, 3])
        gt = np.tile(cv2.cvtColor(gt, cv2.COLOR_BGR2GRAY)[:, :, None], [1, 1, 3])
    out = np.clip((out * 255.0).round(), 0, 255) / 255.0
    return out[..., ::-1].astype(np.float32), gt[..., ::-1]


@pytest.mark.parametrize("seed", range(12))
def test_apply_matches_the_basicsr_reference(seed):
    deg = BFRDegradation.from_preset("difface", downsample_range=[0.8, 6.0])
    rng = np.random.default_rng(seed)
    params = deg.sample_params(rng)
    params.to_gray = seed % 4 == 0  # exercise the gray branch often
    img = photo(seed=seed)
    state = rng.bit_generator.state
    lq, gt = deg.apply(img, params, rng)
    rng.bit_generator.state = state  # the reference gets the same noise draw
    small = (int(img.shape[1] // params.scale), int(img.shape[0] // params.scale))
    noise = rng.standard_normal((small[1], small[0], 3), dtype=np.float32)
    ref_lq, ref_gt = basicsr_reference(img, params, noise)
    assert lq.dtype == gt.dtype == np.float32 and lq.shape == gt.shape == img.shape
    np.testing.assert_array_equal(gt, ref_gt)
    np.testing.assert_array_equal(lq, ref_lq)
    assert np.array_equal(np.round(lq * 255) / 255, lq)  # on the 8-bit grid


def test_jpeg_matches_opencv_float_path_and_channel_order_matters():
    bgr = photo(64, 64)
    ref = cv2.imdecode(cv2.imencode(".jpg", bgr * 255.0, [int(cv2.IMWRITE_JPEG_QUALITY), 40])[1], 1)
    np.testing.assert_array_equal(jpeg_bgr(bgr, 40), ref.astype(np.float32) / np.float32(255))
    swapped = jpeg_bgr(np.ascontiguousarray(bgr[..., ::-1]), 40)[..., ::-1]
    assert not np.array_equal(swapped, jpeg_bgr(bgr, 40))  # chroma subsampling is not order-symmetric


def test_gray_makes_lq_and_gt_gray():
    deg = BFRDegradation.from_preset("difface", gray_prob=1.0)
    lq, gt = deg(photo(), np.random.default_rng(0))
    for im in (lq, gt):
        assert np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 1], im[..., 2])


def test_gfpgan_colour_jitter_runs_and_stays_in_range():
    deg = BFRDegradation.from_preset("gfpgan", color_jitter_prob=1.0, color_jitter_pt_prob=1.0)
    lq, gt = deg(photo(), np.random.default_rng(5))
    assert lq.min() >= 0 and lq.max() <= 1 and lq.dtype == np.float32


# ----------------------------------------------------------------- determinism
def _run(seed: int) -> tuple[np.ndarray, np.ndarray]:
    return BFRDegradation.from_preset("difface")(photo(128, 128), np.random.default_rng(seed))


def test_same_seed_same_output_in_other_processes():
    import multiprocessing as mp

    here = [_run(s) for s in (0, 1)]
    with mp.get_context("spawn").Pool(2) as pool:
        there = pool.map(_run, [0, 1])
    for (a_lq, a_gt), (b_lq, b_gt) in zip(here, there):
        assert np.array_equal(a_lq, b_lq) and np.array_equal(a_gt, b_gt)
    assert not np.array_equal(here[0][0], here[1][0])


def test_params_pickle_for_workers():
    p = BFRDegradation.from_preset("difface").sample_params(np.random.default_rng(0))
    q = pickle.loads(pickle.dumps(p))
    assert np.array_equal(p.kernel, q.kernel) and p.describe() == q.describe()


def test_bad_input_is_a_clear_error():
    deg = BFRDegradation.from_preset("difface")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        deg(np.zeros((16, 16), np.float32), np.random.default_rng(0))
    params = deg.sample_params(np.random.default_rng(0))
    params.scale = 31.0
    with pytest.raises(ValueError, match="too small"):
        deg.apply(np.zeros((16, 16, 3), np.float32), params, np.random.default_rng(0))
