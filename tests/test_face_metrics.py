"""Deg and LMD: formulas against independent NumPy, untrained backbones on tiny inputs, the
released checkpoints' key layout, loading from torch hub's cache, and the missing-file error."""

import math

import numpy as np
import pytest
import torch

from latent_pmrf.metrics.backbones.arcface import ArcFaceResNet18
from latent_pmrf.metrics.backbones.fan import FAN
from latent_pmrf.metrics.face import (IdentityAngle, LandmarkDistance, embedding_angle_degrees, landmark_distance,
                                      landmarks_from_heatmaps)
from latent_pmrf.weights import MissingWeightsError

from conftest import randomize


def test_embedding_angle_against_a_loop():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 16)), rng.normal(size=(5, 16))
    b[0] = 3 * a[0]  # parallel: 0°
    b[1] = -a[1]  # opposite: 180°
    expected = [math.degrees(math.acos(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))) if i > 1
                else (0.0, 180.0)[i] for i, (x, y) in enumerate(zip(a, b))]
    np.testing.assert_allclose(embedding_angle_degrees(a, b), expected, atol=1e-6)


def test_landmarks_from_heatmaps_against_a_loop():
    rng = np.random.default_rng(1)
    heatmaps = rng.random((2, 5, 8, 8)) * 0.5
    peaks = [(3, 4), (0, 2), (7, 7), (5, 0), (2, 6)]  # (row, col); includes the border
    for n, (r, c) in enumerate(peaks):
        heatmaps[:, n, r, c] = 2.0
    out = landmarks_from_heatmaps(heatmaps, (64, 32))  # image H=64, W=32: 8× and 4× the map
    for bi in range(2):
        for n, (r, c) in enumerate(peaks):
            flat = heatmaps[bi, n].ravel()
            i = r * 8 + c
            val = lambda j: flat[min(max(j, 0), 63)]  # noqa: E731
            x = c + 0.25 * np.sign(val(i + 1) - val(i - 1)) + 0.5
            y = r + 0.25 * np.sign(val(i + 8) - val(i - 8)) + 0.5
            np.testing.assert_allclose(out[bi, n], [x * 32 / 8, y * 64 / 8])


def test_landmark_distance_against_a_loop():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 98, 2)), rng.normal(size=(3, 98, 2))
    expected = [np.mean([math.hypot(*(p - q)) for p, q in zip(x, y)]) for x, y in zip(a, b)]
    np.testing.assert_allclose(landmark_distance(a, b), expected)


def test_checkpoint_key_layout():
    arc, fan = ArcFaceResNet18().state_dict(), FAN().state_dict()
    assert len(arc) == 181 and len(fan) == 1137  # counted on VQFR's / AWing's reference modules
    assert arc["fc5.weight"].shape == (512, 32768) and arc["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert "layer1.0.prelu.weight" in arc and "bn5.running_var" in arc
    assert fan["conv1.conv.weight"].shape == (64, 6, 7, 7)  # RGB + row, column, radius
    assert fan["m0.coordconv.conv.weight"].shape == (256, 259, 1, 1)  # first stack: no boundary channels
    assert fan["m1.coordconv.conv.weight"].shape == (256, 261, 1, 1)
    assert fan["l3.weight"].shape == (99, 256, 1, 1) and "al2.weight" in fan and "al3.weight" not in fan
    assert "m2.b2_plus_1.bn1.weight" in fan and fan["conv2.downsample.2.weight"].shape == (128, 64, 1, 1)


def faces(seed, b=2, h=96, w=80):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g).float() / 255


def test_untrained_metrics_on_tiny_inputs():
    torch.manual_seed(0)  # PyTorch's default init: BN at identity, so embeddings depend on the image
    deg = IdentityAngle(ArcFaceResNet18())
    lmd = LandmarkDistance(randomize(FAN(), 0))
    a, b = faces(0), faces(1)
    for metric in (deg, lmd):
        same, diff = metric(a, a), metric(a, b)
        assert same.shape == diff.shape == (2,) and same.dtype == torch.float64
        assert torch.allclose(same, torch.zeros(2, dtype=torch.float64), atol=1e-2) and torch.all(diff >= 0)
    assert torch.all(deg(a, b) > 1e-3)


def test_pretrained_loads_the_released_formats_from_torch_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=f"resnet18_110.pth.*{tmp_path / 'hub' / 'checkpoints'}"):
        IdentityAngle.pretrained()
    with pytest.raises(MissingWeightsError, match="alignment_WFLW_4HG.pth"):
        LandmarkDistance.pretrained()
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    arc, fan = randomize(ArcFaceResNet18(), 3), randomize(FAN(), 4)
    torch.save({"module." + k: v for k, v in arc.state_dict().items()}, folder / "resnet18_110.pth")  # DataParallel
    torch.save({"state_dict": fan.state_dict(), "epoch": 1}, folder / "alignment_WFLW_4HG.pth")
    a, b = faces(5), faces(6)
    assert torch.equal(IdentityAngle.pretrained()(a, b), IdentityAngle(arc)(a, b))
    assert torch.equal(LandmarkDistance.pretrained()(a, b), LandmarkDistance(fan)(a, b))
