"""PSNR / SSIM (RGB, 0-255, no crop) against independent NumPy / scikit-image computations."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from latent_pmrf.metrics.distortion import psnr, ssim


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (2, 3, 32, 40), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(pred), torch.from_numpy(gt)


def test_psnr_matches_numpy(pair):
    pred, gt = pair
    for i in range(2):
        mse01 = np.mean((pred[i].numpy() / 255.0 - gt[i].numpy() / 255.0) ** 2)
        assert psnr(pred, gt)[i].item() == pytest.approx(10 * np.log10(1 / (mse01 + 1e-8)), rel=1e-9)  # BasicSR
    # [0, 1] floats are rounded to the 8-bit grid first
    assert torch.allclose(psnr(pred / 255.0, gt / 255.0), psnr(pred, gt))


def test_ssim_matches_scikit_image_gaussian_convention(pair):
    pred, gt = pair
    for i in range(2):
        ref = structural_similarity(pred[i].permute(1, 2, 0).numpy().astype(float),
                                    gt[i].permute(1, 2, 0).numpy().astype(float), channel_axis=2,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        assert ssim(pred, gt)[i].item() == pytest.approx(ref, abs=1e-6)
    assert torch.allclose(ssim(gt, gt), torch.ones(2, dtype=torch.float64))


def test_errors_name_the_problem(pair):
    pred, gt = pair
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr(pred.double(), gt.double())
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(pred[:, :, :20], gt)
    with pytest.raises(ValueError, match="11"):
        ssim(pred[..., :8, :8], gt[..., :8, :8])
