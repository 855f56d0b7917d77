"""Library metrics are wrapped, not rewritten: each wrapper on tiny inputs with an untrained
backbone (pretrained files are absent here), checked against the library called directly or an
independent computation, plus the missing-weights errors."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from latent_pmrf.metrics.distribution import (DINOv2Distance, DINOv2Features, InceptionFID, dinov2_pos_embed,
                                              gaussian_stats)
from latent_pmrf.metrics.library import LPIPS, PyiqaMetric
from latent_pmrf.metrics.registry import METRICS, build_metrics, metric_info
from latent_pmrf.weights import WEIGHT_FILES, MissingWeightsError


def images(b=2, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g).float() / 255


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    packaged = WEIGHT_FILES["inception_packaged"]  # installed with the package, not in a cache
    monkeypatch.setitem(WEIGHT_FILES, "inception_packaged", replace(packaged, folder=lambda: tmp_path / "site"))
    return tmp_path


def test_every_metric_has_info_without_weights():
    for name in METRICS:
        info = metric_info(name)
        assert info.name == name and info.reference in ("none", "gt", "posterior_mean", "set")


@pytest.mark.parametrize("name, filename", [("lpips_alex", "alexnet-owt-7be5be79.pth"),
                                            ("lpips_vgg", "vgg16-397923af.pth"), ("dists", "vgg16-397923af.pth"),
                                            ("musiq", "musiq_koniq_ckpt-e95806b9.pth"), ("clipiqa", "RN50.pt"),
                                            ("niqe", "niqe_modelparameters.mat"), ("qalign", "one-align"),
                                            ("fid", "inception-2015-12-05.pt"),
                                            ("fd_dinov2", "dinov2_vitl14_pretrain.pth"),
                                            ("deg", "resnet18_110.pth"), ("lmd", "alignment_WFLW_4HG.pth")])
def test_missing_weights_error_names_the_file(empty_caches, name, filename):
    with pytest.raises(FileNotFoundError) as err:
        build_metrics([name])
    assert filename in str(err.value)


def test_lpips_wrapper_equals_lpips_package_with_untrained_trunk():
    import lpips

    torch.manual_seed(0)
    model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()
    metric = LPIPS("lpips_vgg", model=model)
    a, b = images(seed=1), images(seed=2)
    direct = model(a * 2 - 1, b * 2 - 1).flatten()
    assert torch.allclose(metric(a, b), direct.double(), atol=1e-6)
    assert torch.allclose(metric(a, a), torch.zeros(2, dtype=torch.float64), atol=1e-6)


def test_lpips_names_build_their_own_trunk(monkeypatch):
    """The registry's ``lpips_alex`` is AlexNet and ``lpips_vgg`` VGG16 (untrained trunks)."""
    import lpips

    import latent_pmrf.metrics.library as library

    monkeypatch.setattr(library, "build_lpips", lambda net: lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval())
    built = build_metrics(["lpips_alex", "lpips_vgg"])
    assert isinstance(built["lpips_alex"].model.net, lpips.pretrained_networks.alexnet)
    assert isinstance(built["lpips_vgg"].model.net, lpips.pretrained_networks.vgg16)
    assert metric_info("lpips_alex").weights == ("alexnet",) and metric_info("lpips_vgg").weights == ("vgg16",)
    with pytest.raises(ValueError, match="'lpips' is ambiguous: use lpips_alex .* or lpips_vgg"):
        build_metrics(["lpips"])
    with pytest.raises(ValueError, match="'lpips' is ambiguous"):
        metric_info("lpips")


def test_lpips_alex_is_what_pyiqas_default_lpips_computes(monkeypatch):
    """The official evaluation's ``pyiqa.create_metric('lpips')``: pyiqa's default config names AlexNet,
    and with the weights of our ``lpips_alex`` (untrained trunk, the lpips package's heads) loaded into
    it, it gives the same values."""
    import lpips
    import pyiqa
    import torchvision
    from pyiqa.archs import lpips_arch
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    assert DEFAULT_CONFIGS["lpips"]["metric_opts"]["net"] == "alex"
    assert DEFAULT_CONFIGS["lpips-vgg"]["metric_opts"]["net"] == "vgg"
    torch.manual_seed(0)
    ours = LPIPS("lpips_alex", model=lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval())
    untrained_alexnet = torchvision.models.alexnet  # lpips_arch.models is torchvision.models: keep the original
    monkeypatch.setattr(lpips_arch.models, "alexnet", lambda weights=None: untrained_alexnet(weights=None))
    official = pyiqa.create_metric("lpips", device="cpu", pretrained=False, pnet_rand=True)
    official.net.load_state_dict(ours.model.state_dict(), strict=True)  # same layout: AlexNet trunk + 5 heads
    a, b = images(seed=13), images(seed=14)
    assert torch.allclose(ours(a, b), official(a, b).double().flatten(), atol=1e-6)


def test_ms_ssim_is_pyiqas_weight_free_metric():
    import pyiqa

    metric = PyiqaMetric("ms_ssim")
    a = images(h=192, w=192, seed=3)
    b = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    values = metric(a, b)
    assert values.shape == (2,) and torch.all(values < 1) and torch.all(values > 0.5)
    assert torch.allclose(values, pyiqa.create_metric("ms_ssim", device="cpu")(a, b).double().flatten())
    assert torch.allclose(metric(a, a), torch.ones(2, dtype=torch.float64))


def test_musiq_untrained_runs_on_tiny_inputs():
    torch.manual_seed(0)
    metric = PyiqaMetric("musiq", pretrained=False)
    values = metric(images(h=64, w=80))
    assert values.shape == (2,) and torch.isfinite(values).all()


def test_dists_with_untrained_vgg(monkeypatch):
    import pyiqa.archs.dists_arch as dists_arch
    import torchvision

    untrained_vgg16 = torchvision.models.vgg16  # dists_arch.models is torchvision.models: keep the original
    monkeypatch.setattr(dists_arch.models, "vgg16", lambda weights=None: untrained_vgg16(weights=None))
    torch.manual_seed(0)
    metric = PyiqaMetric("dists", pretrained=False)
    a, b = images(seed=5), images(seed=6)
    values = metric(a, b)
    assert values.shape == (2,) and torch.isfinite(values).all()
    assert torch.allclose(metric(a, a), torch.zeros(2, dtype=torch.float64), atol=1e-5)


class TinyFeatures(torch.nn.Module):
    """An untrained stand-in for Inception: (B, 3, 299, 299) in [0, 255] -> (B, 8)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 7, stride=4)

    def forward(self, x):
        return self.conv(x / 128 - 1).mean(dim=(2, 3))


def test_fid_uses_clean_fid_resize_and_an_independent_frechet_distance():
    from cleanfid.fid import frechet_distance as cleanfid_fd
    from cleanfid.resize import build_resizer

    net = TinyFeatures()
    metric = InceptionFID(model=net)
    a, b = images(b=12, seed=7), images(b=10, seed=8) * 0.8
    fa = metric.features(a)
    resize = build_resizer("clean")
    manual = np.stack([resize(np.asarray(torch.round(x * 255).byte().permute(1, 2, 0))) for x in a])
    with torch.no_grad():
        expected = net(torch.from_numpy(manual).permute(0, 3, 1, 2)).double().numpy()
    np.testing.assert_allclose(fa, expected, rtol=1e-6)
    fb = metric.features(b)
    mu1, s1 = fa.mean(0), np.cov(fa, rowvar=False)
    mu2, s2 = fb.mean(0), np.cov(fb, rowvar=False)
    independent = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert metric.distance(fa, fb) == pytest.approx(independent, rel=1e-6)
    assert metric.distance(fa, fb) == pytest.approx(cleanfid_fd(mu1, s1, mu2, s2), rel=1e-6)
    assert metric.distance(fa, gaussian_stats(fb)) == pytest.approx(independent, rel=1e-6)


def tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224, depth=1, embed_dim=48,
                             num_heads=2).eval()


def test_dinov2_features_match_the_dgm_eval_preprocessing():
    from torchvision import transforms

    model = tiny_vit()
    extractor = DINOv2Features(model=model)
    x = images(b=2, h=96, w=80, seed=9)
    feats = extractor(x)
    pipeline = transforms.Compose([transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC),
                                   transforms.ToTensor(),
                                   transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    pil = [Image.fromarray(np.asarray(torch.round(img * 255).byte().permute(1, 2, 0))) for img in x]
    with torch.no_grad():
        expected = model.forward_features(torch.stack([pipeline(p) for p in pil]))[:, 0]
    np.testing.assert_allclose(feats, expected.double().numpy(), rtol=1e-4, atol=1e-5)
    assert feats.shape == (2, 48)


def test_dinov2_distances_use_the_shared_features_and_the_formulas():
    extractor = DINOv2Features(model=tiny_vit())
    fd, mmd = DINOv2Distance("fd", extractor), DINOv2Distance("mmd", extractor)
    fa, fb = extractor(images(b=6, seed=10)), extractor(images(b=5, seed=11) * 0.5)
    gamma = 1 / (2 * 10.0**2)
    k = lambda x, y: np.exp(-gamma * ((x[:, None] - y[None]) ** 2).sum(-1)).mean()  # noqa: E731
    assert mmd.distance(fa, fb) == pytest.approx(1000 * (k(fa, fa) + k(fb, fb) - 2 * k(fa, fb)), rel=1e-9)
    assert fd.distance(fa, fb) >= 0 and fd.distance(fa, fa) == pytest.approx(0, abs=1e-6)


def test_dinov2_position_embedding_resize_matches_dinov2():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 1 + 37 * 37, 16, generator=g)
    out = dinov2_pos_embed(pos, 16)
    assert out.shape == (1, 1 + 256, 16) and torch.equal(out[:, 0], pos[:, 0])
    grid = pos[:, 1:].reshape(1, 37, 37, 16).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic")
    assert torch.allclose(out[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 256, 16))
    assert torch.allclose(dinov2_pos_embed(pos, 37, offset=0.0), pos, atol=1e-5)  # same grid: unchanged


def test_niqe_reads_its_parameter_file_from_pyiqas_cache(empty_caches):
    """A made-up (but valid) pristine model in the cache: the real loading path, no download."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(36, 36))
    folder = empty_caches / "torch" / "hub" / "pyiqa"
    folder.mkdir(parents=True)
    savemat(folder / "niqe_modelparameters.mat", {"mu_prisparam": rng.normal(size=(1, 36)),
                                                  "cov_prisparam": basis @ basis.T / 36 + np.eye(36)})
    metric = build_metrics(["niqe"])["niqe"]
    values = metric(images(b=2, h=192, w=192, seed=12))
    assert values.shape == (2,) and torch.isfinite(values).all()
