import math

import pytest
import torch
import torchvision
from torch import nn

from latent_pmrf.lightning.ema import EMA
from latent_pmrf.lightning.lr_schedule import warmup_cosine
from latent_pmrf.losses.lpips_net import build_lpips
from latent_pmrf.losses.patch_gan import PatchDiscriminator, discriminator_hinge_loss, generator_hinge_loss
from latent_pmrf.losses.perceptual import VGG19_WEIGHTS_FILE, VGGPerceptualLoss

PAPER_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
# torchvision vgg19().features indices of those convs (pre-ReLU outputs).
TORCHVISION_INDEX = {"conv1_2": 2, "conv2_2": 7, "conv3_4": 16, "conv4_4": 25, "conv5_4": 34}


def _pre_relu_reference(vgg_state: dict, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """Pre-ReLU conv outputs by torchvision index, from a VGG19 whose ReLUs are rebuilt non-inplace
    and whose conv outputs are copied (BasicSR's ``output[key] = x.clone()``): no aliasing possible."""
    vgg = torchvision.models.vgg19(weights=None).features[:35].eval()
    vgg.load_state_dict(vgg_state)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h, out = ((x + 1) / 2 - mean) / std, {}
    for i, layer in enumerate(vgg):
        h = torch.relu(h) if isinstance(layer, nn.ReLU) else layer(h)
        out[i] = h.clone()
    return out


def test_perceptual_loss_compares_pre_relu_features():
    torch.manual_seed(0)
    loss = VGGPerceptualLoss(PAPER_LAYERS, pretrained=False)
    pred, target = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    fp, ft = (_pre_relu_reference(loss.features.state_dict(), x) for x in (pred, target))
    expected = sum(w * (fp[TORCHVISION_INDEX[n]] - ft[TORCHVISION_INDEX[n]]).abs().mean(dim=(1, 2, 3))
                   for n, w in PAPER_LAYERS.items())
    with torch.no_grad():
        torch.testing.assert_close(loss(pred, target), expected, rtol=1e-5, atol=1e-6)
        stored = loss._features(pred)
    # conv outputs before the ReLU take negative values; post-ReLU maps (the old bug) cannot.
    for name in PAPER_LAYERS:
        assert stored[name].min() < 0, name
    assert not any(p.requires_grad for p in loss.parameters())


def test_perceptual_loss_backward_reaches_the_prediction():
    loss = VGGPerceptualLoss({"conv1_2": 1.0, "conv2_2": 1.0}, pretrained=False)
    pred = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_()
    loss(pred, torch.zeros(1, 3, 16, 16)).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_missing_vgg_weights_name_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"{VGG19_WEIGHTS_FILE}.*{tmp_path}/hub/checkpoints"):
        VGGPerceptualLoss(PAPER_LAYERS, pretrained=True)
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth.*LPIPS|LPIPS.*vgg16-397923af\.pth"):
        build_lpips("vgg")


def test_unknown_vgg_layer_rejected():
    with pytest.raises(ValueError, match="conv9_9"):
        VGGPerceptualLoss({"conv9_9": 1.0}, pretrained=False)


def test_warmup_cosine_schedule_points():
    kw = dict(base_lr=1e-4, warmup_steps=500, warmup_start_lr=1e-5, cosine_steps=150_000, min_lr=1e-6)
    assert warmup_cosine(0, **kw) == pytest.approx(1e-5)
    assert warmup_cosine(250, **kw) == pytest.approx(1e-5 + 0.5 * 9e-5)
    assert warmup_cosine(500, **kw) == pytest.approx(1e-4)
    assert warmup_cosine(500 + 75_000, **kw) == pytest.approx((1e-4 + 1e-6) / 2)
    assert warmup_cosine(500 + 150_000, **kw) == pytest.approx(1e-6)
    assert warmup_cosine(10**7, **kw) == pytest.approx(1e-6)
    values = [warmup_cosine(s, **kw) for s in range(500, 150_500, 997)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_ema_follows_the_official_decay_schedule():
    ema = EMA(decay=0.9999)
    model = nn.Linear(3, 1, bias=False)
    average = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema.avg_fn, use_buffers=True)
    expected = model.weight.detach().clone()
    average.update_parameters(model)  # first update copies
    for n in range(1, 30):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        decay = min(0.9999, (1 + n) / (10 + n))  # diffusers EMAModel with n updates so far
        expected = decay * expected + (1 - decay) * model.weight.detach()
        average.update_parameters(model)
        torch.testing.assert_close(average.module.weight, expected)


def test_gan_terms_move_only_their_own_network():
    disc = PatchDiscriminator(3, width=8, layers=2)
    fake = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    generator_hinge_loss(disc, fake).backward()
    assert fake.grad is not None and all(p.grad is None for p in disc.parameters())
    fake.grad = None
    discriminator_hinge_loss(disc, torch.rand(2, 3, 32, 32), fake).backward()
    assert fake.grad is None and all(p.grad is not None for p in disc.parameters())


def test_hinge_loss_values():
    class Constant(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = nn.Parameter(torch.tensor(value))

        def forward(self, x):
            return self.value.expand(x.shape[0], 1, 2, 2)

    x = torch.zeros(2, 3, 4, 4)
    assert discriminator_hinge_loss(Constant(0.5), x, x).item() == pytest.approx(0.5 + 1.5)
    assert generator_hinge_loss(Constant(0.5), x).item() == pytest.approx(-0.5)
    assert math.isfinite(discriminator_hinge_loss(Constant(-3.0), x, x).item())
