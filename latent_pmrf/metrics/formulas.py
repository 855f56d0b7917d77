"""The metric formulas that are ours rather than a library's (paper Sec. 4.1, Table 4, Fig. 5):
Fréchet distance (FID, FD-DINOv2), the RBF-kernel MMD of MMD-DINOv2, and IndRMSE in its two
aggregations (PMRF's and the official Latent-PMRF code's)."""

from __future__ import annotations

import numpy as np
from scipy import linalg


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of a feature set (n × d), in float64."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """‖μ1 - μ2‖² + Tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^½) (Heusel et al. 2017), in float64.

    As clean-fid / pytorch-fid: when the product is near-singular, ``eps`` is added to both
    diagonals; a negligible imaginary part of the square root is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes differ: mu {mu1.shape} vs {mu2.shape}, cov {cov1.shape} vs {cov2.shape}")
    if not (np.isfinite(cov1).all() and np.isfinite(cov2).all()):  # e.g. one sample: undefined
        return float("nan")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = np.eye(cov1.shape[0]) * eps
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in the covariance square root")
        covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def frechet_distance_to(features: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The Fréchet distance between a feature set (n × d) and a Gaussian (μ2, Σ2), equal to
    ``frechet_distance(*gaussian_stats(features), mu2, cov2)`` but without the d×d matrix square root
    when n ≤ d: with A = (X − μ1)/√(n − 1), Σ1 = AᵀA, and the non-zero eigenvalues of Σ1Σ2 = AᵀAΣ2
    are those of the n×n PSD matrix AΣ2Aᵀ, so Tr (Σ1Σ2)^½ = Σ √λ(AΣ2Aᵀ) (milliseconds instead of
    half a minute at d = 2048)."""
    x = np.asarray(features, np.float64)
    n, d = x.shape
    mu2, cov2 = np.asarray(mu2, np.float64), np.asarray(cov2, np.float64)
    if n < 2 or not np.isfinite(cov2).all():  # no covariance from one sample: undefined, not a hang in sqrtm
        return float("nan")
    if n > d:
        return frechet_distance(*gaussian_stats(x), mu2, cov2)
    mu1 = x.mean(0)
    a = (x - mu1) / np.sqrt(n - 1)  # (n, d)
    eig = np.linalg.eigvalsh(a @ cov2 @ a.T)
    trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() + np.trace(cov2) - 2 * trace_sqrt)


def mmd_rbf(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """MMD² with k(a, b) = exp(-‖a - b‖² / (2σ²)), biased estimator (means over the full kernel
    matrices, diagonals included), × ``scale``: the MMD-DINOv2 convention (CMMD-style, σ = 10,
    ×1000) on (N, D) and (M, D) feature arrays."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) features, got {x.shape} and {y.shape}")
    gamma = 1.0 / (2 * sigma**2)

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return float(np.exp(-gamma * np.maximum(sq, 0.0)).mean())

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))


def _to_255(images) -> np.ndarray:
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64)
    arr = arr.astype(np.float64)
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"float images must be in [0, 1], got range [{arr.min():.3g}, {arr.max():.3g}]")
    return arr * 255.0


def _per_image_mse(restored, posterior_mean) -> np.ndarray:
    a, b = _to_255(restored), _to_255(posterior_mean)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return ((a - b) ** 2).reshape(a.shape[0], -1).mean(axis=1)


def ind_rmse(restored, posterior_mean) -> float:
    """PMRF's IndRMSE: sqrt(mean over images of the MSE on 0-255 between each restored image and its
    posterior mean) (the distortion the flow adds on top of f(y)). Inputs: uint8 or [0, 1] float
    batches (N, ...), the same shape."""
    return float(np.sqrt(_per_image_mse(restored, posterior_mean).mean()))


def ind_rmse_per_image(restored, posterior_mean) -> float:
    """The official Latent-PMRF IndRMSE (Fig. 5): mean over images of each image's RMSE on 0-255
    against its posterior mean (the official code works on [0, 1]: its value is this / 255).
    Inputs as :func:`ind_rmse`; never larger than it."""
    return float(np.sqrt(_per_image_mse(restored, posterior_mean)).mean())
