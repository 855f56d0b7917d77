"""MetricSuite, the one metric loop of `evaluate` and the convergence callback: per-image values and
aggregates against NumPy, one embedding per image for metrics that share a backbone, a reference set
computed once (kept across reset, cached on disk), fixed reference statistics, clear errors."""

import numpy as np
import pytest
import torch

from latent_pmrf.metrics.base import FeatureMetric
from latent_pmrf.metrics.distribution import DINOv2Distance, InceptionFID, gaussian_stats
from latent_pmrf.metrics.formulas import frechet_distance, mmd_rbf
from latent_pmrf.metrics.suite import MetricSuite


class CountingExtractor:
    """Stands in for DINOv2Features: per-channel means and stds as features; counts its images."""

    kind = "counting"

    def __init__(self):
        self.images = 0

    def __call__(self, images):
        self.images += images.shape[0]
        x = images.double()
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1).numpy()


def batches(n, seed, size=24):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (b, 3, size, size), generator=g).float() / 255 for b in n]


def test_per_image_values_and_aggregates_against_numpy():
    preds, gts, pms = batches([3, 2], 0), batches([3, 2], 1), batches([3, 2], 2)
    suite = MetricSuite(["psnr", "ind_rmse", "ind_rmse_per_image"])
    for p, g, m in zip(preds, gts, pms):
        suite.update(p, g, m)
    p, g, m = (np.round(torch.cat(x).double().numpy() * 255) for x in (preds, gts, pms))  # the files' integers
    mse_gt, mse_pm = ((p - g) ** 2).mean(axis=(1, 2, 3)), ((p - m) ** 2).mean(axis=(1, 2, 3))
    psnr = 10 * np.log10(1 / (mse_gt / 255**2 + 1e-8))
    np.testing.assert_allclose(suite.per_image()["psnr"], psnr, rtol=1e-10)
    values = suite.compute()
    assert list(values) == ["psnr", "ind_rmse", "ind_rmse_per_image"] and suite.images == 5
    assert values["psnr"] == pytest.approx(psnr.mean(), rel=1e-10)
    assert values["ind_rmse"] == pytest.approx(np.sqrt(mse_pm.mean()), rel=1e-10)
    assert values["ind_rmse_per_image"] == pytest.approx(np.sqrt(mse_pm).mean(), rel=1e-10)
    suite.reset()
    with pytest.raises(ValueError, match="no images"):
        suite.compute()
    with pytest.raises(ValueError, match="ind_rmse needs the posterior_mean"):
        suite.update(preds[0], gts[0])


def test_shared_backbone_reference_once_and_cached(tmp_path):
    extractor = CountingExtractor()
    built = {"fd_dinov2": DINOv2Distance("fd", extractor), "mmd_dinov2": DINOv2Distance("mmd", extractor)}
    preds, refs = batches([4, 4], 3), batches([5, 5], 4)
    suite = MetricSuite(["mmd_dinov2", "fd_dinov2"], built=built)
    assert suite.needs_reference
    for p in preds:
        suite.update(p)
    with pytest.raises(ValueError, match="mmd_dinov2, fd_dinov2 need a reference set"):
        suite.compute()
    suite.set_reference(iter(refs), tmp_path, "ten")
    assert extractor.images == 8 + 10  # each image embedded once for both metrics
    pred_f = CountingExtractor()(torch.cat(preds))
    ref_f = CountingExtractor()(torch.cat(refs))
    first = suite.compute()
    assert first["mmd_dinov2"] == pytest.approx(mmd_rbf(pred_f, ref_f, sigma=10.0, scale=1000.0), rel=1e-9)
    assert first["fd_dinov2"] == pytest.approx(frechet_distance(*gaussian_stats(pred_f), *gaussian_stats(ref_f)),
                                               rel=1e-9)
    assert [f.name for f in tmp_path.iterdir()] == ["counting-ten.npy"]

    suite.reset()  # the reference stays
    assert not suite.needs_reference
    for p in preds:
        suite.update(p)
    assert suite.compute() == first and extractor.images == 18 + 8

    def unread():
        raise AssertionError("the cached reference set was read again")
        yield

    fresh = MetricSuite(["fd_dinov2"], built=built)
    fresh.set_reference(unread(), tmp_path, "ten")
    for p in preds:
        fresh.update(p)
    assert fresh.compute()["fd_dinov2"] == pytest.approx(first["fd_dinov2"], rel=1e-12)


def test_fixed_reference_statistics_need_no_reference_set():
    class MeanFeatures(torch.nn.Module):
        def forward(self, x):  # (B, 3, 299, 299) -> (B, 3)
            return x.mean(dim=(2, 3))

    fid = InceptionFID(model=MeanFeatures())
    assert isinstance(fid, FeatureMetric) and fid.feature_kind == "inception_clean"
    preds = batches([6], 5)
    mu, sigma = np.full(3, 100.0), np.eye(3)
    suite = MetricSuite(["fid"], built={"fid": fid}, reference_stats={"fid": (mu, sigma)})
    assert not suite.needs_reference
    suite.update(preds[0])
    feats = fid.features(preds[0])
    assert suite.compute()["fid"] == pytest.approx(frechet_distance(*gaussian_stats(feats), mu, sigma), rel=1e-9)
