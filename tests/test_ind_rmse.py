"""IndRMSE's two published aggregations against a plain NumPy loop: PMRF's (sqrt of the mean MSE)
and the official Latent-PMRF code's, which Fig. 5 plots (mean of per-image RMSE)."""

import numpy as np
import pytest
import torch

from latent_pmrf.metrics import ind_rmse, ind_rmse_per_image
from latent_pmrf.metrics.registry import build_metrics, metric_info


def pairs(seed=0, n=5):
    """uint8 (N, H, W, 3) restorations and posterior means; image i differs by a noise of scale ~i, so
    the per-image errors differ and the two aggregations are apart."""
    rng = np.random.default_rng(seed)
    pm = rng.integers(0, 256, (n, 12, 10, 3), dtype=np.uint8)
    noise = rng.normal(size=pm.shape) * (1 + 8 * np.arange(n))[:, None, None, None]
    return np.clip(pm + noise, 0, 255).round().astype(np.uint8), pm


def numpy_errors(restored, pm):
    """Per-image RMSE on 0-255, one image at a time."""
    return np.array([np.sqrt(np.mean((r.astype(np.float64) - p.astype(np.float64)) ** 2))
                     for r, p in zip(restored, pm)])


def test_the_two_formulas_match_numpy_and_differ():
    restored, pm = pairs()
    rmse = numpy_errors(restored, pm)
    assert ind_rmse(restored, pm) == pytest.approx(np.sqrt(np.mean(rmse**2)), rel=1e-12)  # PMRF
    assert ind_rmse_per_image(restored, pm) == pytest.approx(np.mean(rmse), rel=1e-12)  # Latent-PMRF, Fig. 5
    assert ind_rmse_per_image(restored, pm) < ind_rmse(restored, pm) - 1  # Jensen, clearly apart here
    assert ind_rmse_per_image(restored / 255.0, pm / 255.0) == pytest.approx(np.mean(rmse), rel=1e-12)
    assert ind_rmse_per_image(pm, pm) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        ind_rmse_per_image(restored[:2], pm)


@pytest.mark.parametrize("name, aggregate", [("ind_rmse", lambda rmse: np.sqrt(np.mean(rmse**2))),
                                             ("ind_rmse_per_image", np.mean)])
def test_registered_metrics_aggregate_as_their_definition(name, aggregate):
    """Through the registry, batch by batch as ``evaluate`` does: per-image values, then ``aggregate``."""
    restored, pm = pairs(seed=1)
    metric = build_metrics([name])[name]
    assert metric_info(name).reference == "posterior_mean" and not metric_info(name).higher_is_better

    def to_tensor(x):
        return torch.from_numpy(x).permute(0, 3, 1, 2).double() / 255

    values = np.concatenate([metric(to_tensor(restored[i:i + 2]), to_tensor(pm[i:i + 2])).numpy()
                             for i in range(0, len(pm), 2)])
    assert metric.aggregate(values) == pytest.approx(aggregate(numpy_errors(restored, pm)), rel=1e-9)
