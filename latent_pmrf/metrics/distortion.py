"""PSNR and SSIM with the paper's convention (PMRF's evaluation: BasicSR's ``calculate_psnr_pt`` /
``calculate_ssim_pt``): RGB, values in [0, 255] after 8-bit rounding, no border crop, no Y channel.

SSIM (Wang et al. 2004) as BasicSR: 11×11 Gaussian window σ = 1.5, 'valid' filtering (no padding),
C1 = (0.01·255)², C2 = (0.03·255)², the SSIM map averaged per channel, then over channels.
Computed in float64 on (B, 3, H, W) batches; returns one value per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_255(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats or uint8 -> float64 on the 8-bit grid (values 0..255)."""
    if images.dtype == torch.uint8:
        return images.double()
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"float images must be in [0, 1], got [{float(images.min()):.3g}, {float(images.max()):.3g}]")
    return torch.round(images.double() * 255.0)


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images on the 0-255 scale."""
    a, b = to_255(pred), to_255(gt)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = (a - b).pow(2).mean(dim=(1, 2, 3)) / 255.0**2
    return 10 * torch.log10(1.0 / (mse + 1e-8))  # BasicSR's epsilon, on the [0, 1] scale


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM of RGB images on the 0-255 scale (BasicSR convention, see the module docstring)."""
    a, b = to_255(pred), to_255(gt)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11×11, got {tuple(a.shape[-2:])}")
    g = _gaussian_1d().to(a.device)

    def filt(x: torch.Tensor) -> torch.Tensor:
        # the 11×11 window is outer(g, g): two 1-D 'valid' passes, 11× fewer operations than 2-D
        k = x.shape[1]
        x = F.conv2d(x, g.view(1, 1, 11, 1).expand(k, 1, 11, 1), groups=k)
        return F.conv2d(x, g.view(1, 1, 1, 11).expand(k, 1, 1, 11), groups=k)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b, aa, bb, ab = filt(torch.cat([a, b, a * a, b * b, a * b], dim=1)).chunk(5, dim=1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)
