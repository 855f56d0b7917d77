"""Our metric formulas against independent computations (closed forms, loops, clean-fid)."""

import numpy as np
import pytest

from latent_pmrf.metrics import frechet_distance, ind_rmse, mmd_rbf


def test_frechet_distance_closed_forms():
    # 1-D Gaussians: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == \
        pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2 + |mu1 - mu2|^2
    rng = np.random.default_rng(0)
    a, b, m1, m2 = rng.random(5) + 0.1, rng.random(5) + 0.1, rng.random(5), rng.random(5)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_clean_fid():
    from cleanfid.fid import frechet_distance as cleanfid_fd

    rng = np.random.default_rng(1)
    f1, f2 = rng.standard_normal((300, 16)), rng.standard_normal((250, 16)) * 1.3 + 0.2
    stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in (f1, f2)]
    ours = frechet_distance(*stats[0], *stats[1])
    assert ours == pytest.approx(cleanfid_fd(*stats[0], *stats[1]), rel=1e-6)
    assert frechet_distance(*stats[0], *stats[0]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(stats[0][0], stats[0][1], stats[1][0][:3], stats[1][1][:3, :3])


def test_mmd_matches_a_double_loop():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((7, 4)) * 5, rng.standard_normal((5, 4)) * 5 + 3
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * 10.0**2))  # noqa: E731
    kxx = np.mean([[k(a, b) for b in x] for a in x])
    kyy = np.mean([[k(a, b) for b in y] for a in y])
    kxy = np.mean([[k(a, b) for b in y] for a in x])
    assert mmd_rbf(x, y) == pytest.approx(1000 * (kxx + kyy - 2 * kxy), rel=1e-10)
    assert mmd_rbf(x, y, sigma=2.0, scale=1.0) != pytest.approx(mmd_rbf(x, y))
    assert mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12) and mmd_rbf(x, y) == pytest.approx(mmd_rbf(y, x))
    with pytest.raises(ValueError, match="features"):
        mmd_rbf(x, y[:, :3])


def test_ind_rmse_matches_a_loop_and_accepts_uint8_or_unit_floats():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    per_image = [np.mean((a[i].astype(float) - b[i].astype(float)) ** 2) for i in range(4)]
    expected = np.sqrt(np.mean(per_image))
    assert ind_rmse(a, b) == pytest.approx(expected)
    assert ind_rmse(a / 255.0, b / 255.0) == pytest.approx(expected)
    assert ind_rmse(a, a) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ind_rmse(a * 2.0, b / 255.0)
    with pytest.raises(ValueError, match="shapes differ"):
        ind_rmse(a[:2], b)


def test_low_rank_frechet_distance_equals_the_square_root_formula():
    """FID of n < d features against a Gaussian without the d×d square root (metrics/formulas.py):
    the same value as the sqrtm formula (as clean-fid computes it)."""
    from latent_pmrf.metrics.formulas import frechet_distance, frechet_distance_to, gaussian_stats

    rng = np.random.default_rng(0)
    for n, d in [(20, 64), (64, 64), (5, 32), (100, 16)]:
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + 1.0
        y = rng.normal(size=(3 * n, d)) + 0.5
        mu2, cov2 = gaussian_stats(y)
        expected = frechet_distance(*gaussian_stats(x), mu2, cov2)
        assert frechet_distance_to(x, mu2, cov2) == pytest.approx(expected, rel=1e-7, abs=1e-7)


def test_frechet_distance_of_one_sample_is_nan_not_a_hang():
    from latent_pmrf.metrics.formulas import frechet_distance, frechet_distance_to, gaussian_stats

    rng = np.random.default_rng(1)
    one, many = rng.normal(size=(1, 2048)), rng.normal(size=(40, 2048))
    assert np.isnan(frechet_distance_to(one, *gaussian_stats(many)))
    assert np.isnan(frechet_distance(*gaussian_stats(one), *gaussian_stats(many)))
    assert np.isnan(frechet_distance_to(many, *gaussian_stats(one)))
