import itertools
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO, randomize, tiny_vae_overrides
from latent_pmrf.models import sim_vae, sim_vae_config
from latent_pmrf.models.sim_vae import SimVAE
from latent_pmrf.models.sim_vae_config import SIM_VAE_PRESETS, SimVAEConfig
from latent_pmrf.models.vae_hub import CONFIG_NAME, WEIGHTS_NAME


# ----------------------------------------------------------------- official layout
def test_official_c32_keys_and_shapes(reference_dir):
    ref = json.loads((reference_dir / "official_c32_keys.json").read_text())
    model = SimVAE.from_config_file(reference_dir / "official_c32_config.json")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: shape for k, shape in ref["state_dict"]}
    assert sum(p.numel() for p in model.parameters()) == ref["total_parameters"] == 91_030_595
    assert sum(p.numel() for p in model.encoder.parameters()) == ref["encoder_parameters"]
    assert sum(p.numel() for p in model.decoder.parameters()) == ref["decoder_parameters"]
    assert list(model.buffers()) == []


def test_official_config_is_the_c32_preset(reference_dir):
    assert SimVAE.from_config_file(reference_dir / "official_c32_config.json").config == SimVAEConfig.preset("sim_vae_c32")


# ----------------------------------------------------------------- independent reference forward
def _ref_norm(x, sd, prefix, norm_type):
    w, b = sd[prefix + ".weight"], sd[prefix + ".bias"]
    if norm_type == "group_norm":
        return F.group_norm(x, 32, w, b, eps=1e-6)
    mean = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + 1e-6) * w[None, :, None, None] + b[None, :, None, None]


def _ref_conv(x, sd, prefix, stride=1):
    return F.conv2d(x, sd[prefix + ".weight"], sd[prefix + ".bias"], stride=stride, padding=1)


def _ref_resblock(x, sd, prefix, norm_type, pre_norm):
    h = _ref_norm(x, sd, prefix + ".norm", norm_type) if pre_norm else x
    h = _ref_conv(F.silu(_ref_conv(h, sd, prefix + ".conv1")), sd, prefix + ".conv2")
    out = x + h
    return out if pre_norm else _ref_norm(out, sd, prefix + ".norm", norm_type)


def reference_sim_vae(x, eps, sd, levels, layers, mid_layers, norm_type, pre_norm):
    """The official AutoencoderKLSim forward, written from its definition on a raw state dict."""
    h = _ref_conv(x, sd, "encoder.conv_in")
    for i in range(levels):
        for j in range(layers):
            h = _ref_resblock(h, sd, f"encoder.down_blocks.{i}.resnets.{j}", norm_type, pre_norm)
        if i < levels - 1:
            h = _ref_conv(h, sd, f"encoder.down_blocks.{i}.downsampler.conv", stride=2)
    for j in range(mid_layers):
        h = _ref_resblock(h, sd, f"encoder.mid_block.resnets.{j}", norm_type, pre_norm)
    mean, logvar = _ref_conv(h, sd, "encoder.conv_out").chunk(2, dim=1)
    logvar = logvar.clamp(-30, 20)
    z = mean + torch.exp(0.5 * logvar) * eps
    h = _ref_conv(z, sd, "decoder.conv_in")
    for j in range(mid_layers):
        h = _ref_resblock(h, sd, f"decoder.mid_block.resnets.{j}", norm_type, pre_norm)
    for i in range(levels):
        for j in range(layers + 1):
            h = _ref_resblock(h, sd, f"decoder.up_blocks.{i}.resnets.{j}", norm_type, pre_norm)
        if i < levels - 1:
            h = _ref_conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), sd, f"decoder.up_blocks.{i}.upsampler.conv")
    return mean, logvar, _ref_conv(h, sd, "decoder.conv_out")


@pytest.mark.parametrize("norm_type,norm_position", [("layer_norm", "pre_norm"), ("group_norm", "pre_norm"),
                                                     ("layer_norm", "post_norm")])
def test_forward_matches_independent_reference(norm_type, norm_position):
    cfg = SimVAEConfig(block_out_channels=[32, 64, 64], layers_per_block=2, layers_mid_block=2, latent_channels=8,
                       norm_type=norm_type, norm_position=norm_position)
    model = randomize(SimVAE(cfg))
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        posterior = model.encode(x)
        z = posterior.sample(torch.Generator().manual_seed(1))
        recon = model.decode(z)
        eps = torch.randn(posterior.mean.shape, generator=gen)
        mean, logvar, ref = reference_sim_vae(x, eps, model.state_dict(), 3, 2, 2, norm_type, norm_position == "pre_norm")
    torch.testing.assert_close(posterior.mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(posterior.logvar, logvar, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(recon, ref, rtol=1e-4, atol=1e-4)


def test_layer_norm_keeps_the_input_memory_layout():
    from latent_pmrf.models.vae_blocks import ChannelLayerNorm

    norm = ChannelLayerNorm(8, eps=1e-6)
    x = torch.randn(2, 8, 5, 7)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = norm(x.contiguous(memory_format=layout))
        assert out.is_contiguous(memory_format=layout)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_channels_last_model_matches_contiguous():
    cfg = SimVAEConfig(block_out_channels=[16, 32], layers_per_block=1, layers_mid_block=1, latent_channels=4)
    model = randomize(SimVAE(cfg))
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        ref = model.decode(model.encode(x).mode())
        model = model.to(memory_format=torch.channels_last)
        out = model.decode(model.encode(x.contiguous(memory_format=torch.channels_last)).mode())
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- every switch builds and runs
SWITCHES = list(itertools.product(["layer_norm", "group_norm"], ["pre_norm", "post_norm"], ["fused", "separate"],
                                  ["interpolate", "pixel_shuffle"], [False, True]))


@pytest.mark.parametrize("norm_type,norm_position,resize,upsample,mid_attention", SWITCHES)
def test_switches_shapes_and_gradients(norm_type, norm_position, resize, upsample, mid_attention):
    cfg = SimVAEConfig(**tiny_vae_overrides(), norm_type=norm_type, norm_position=norm_position, resize=resize,
                       upsample_method=upsample, mid_attention=mid_attention)
    model = SimVAE(cfg)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    recon, posterior = model(x)
    assert recon.shape == x.shape
    assert posterior.mean.shape == posterior.logvar.shape == (2, 4, 8, 12)
    (recon.square().mean() + posterior.kl().mean()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("preset", sorted(SIM_VAE_PRESETS))
@pytest.mark.parametrize("latent_channels", [1, 16, 48])
def test_presets_any_latent_channels(preset, latent_channels):
    cfg = SimVAEConfig.preset(preset, **{**tiny_vae_overrides(), "latent_channels": latent_channels})
    model = SimVAE(cfg)
    x = torch.rand(1, 3, 24, 16) * 2 - 1
    with torch.no_grad():
        z = model.encode(x).mode()
        assert z.shape == (1, latent_channels, 12, 8)
        assert model.decode(z).shape == x.shape


def test_four_levels_downsample_by_8():
    model = SimVAE(SimVAEConfig(block_out_channels=[32, 32, 64, 64], layers_per_block=1, layers_mid_block=1))
    assert model.config.downsample_factor == 8
    assert model.encode(torch.zeros(1, 3, 40, 24)).mean.shape == (1, 32, 5, 3)


@pytest.mark.parametrize("shape,match", [((1, 3, 20, 16), "divisible by 8"), ((1, 3, 16, 12), "divisible by 8"),
                                         ((1, 4, 16, 16), r"\(B, 3, H, W\)"), ((3, 16, 16), r"\(B, 3, H, W\)")])
def test_bad_image_shape_is_a_clear_error(shape, match):
    model = SimVAE(SimVAEConfig(block_out_channels=[32, 32, 32, 32], layers_per_block=1, layers_mid_block=1))
    with pytest.raises(ValueError, match=match):
        model.encode(torch.zeros(shape))


def test_bad_latent_shape_is_a_clear_error():
    model = SimVAE(SimVAEConfig(**tiny_vae_overrides()))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        model.decode(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("field,value", [("norm_type", "batch_norm"), ("resize", "nearest"), ("upsample_method", "bicubic"),
                                         ("latent_channels", 0)])
def test_bad_config_values_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        SimVAEConfig(**{field: value})


# ----------------------------------------------------------------- posterior
def test_kl_matches_closed_form_of_torch_distributions():
    moments = torch.randn(3, 8, 5, 6) * 2
    from latent_pmrf.models.gaussian import DiagonalGaussian

    post = DiagonalGaussian.from_moments(moments)
    mean, logvar = moments.chunk(2, dim=1)
    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).sum(dim=(1, 2, 3))
    torch.testing.assert_close(post.kl(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(post.std, torch.exp(0.5 * logvar))


def test_sample_is_reparameterised_and_seeded():
    from latent_pmrf.models.gaussian import DiagonalGaussian

    post = DiagonalGaussian.from_moments(torch.cat([torch.full((1, 2, 64, 64), 3.0), torch.full((1, 2, 64, 64), -2.0)], 1))
    a = post.sample(torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, post.sample(torch.Generator().manual_seed(7)))
    assert abs(a.mean().item() - 3.0) < 0.02 and abs(a.std().item() - float(torch.exp(torch.tensor(-1.0)))) < 0.01
    assert torch.equal(post.mode(), post.mean)
    # logvar clamp of the official code
    assert DiagonalGaussian.from_moments(torch.tensor([[[[0.0]], [[100.0]]]])).logvar.item() == 20.0


# ----------------------------------------------------------------- save / load in the official format
def test_save_pretrained_round_trip(tmp_path):
    model = randomize(SimVAE(SimVAEConfig(**tiny_vae_overrides(), scaling_factor=0.5, shift_factor=0.1)))
    model.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert raw["_class_name"] == "AutoencoderKLSim" and "latent_pmrf" not in raw
    loaded = SimVAE.from_pretrained(tmp_path)
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(x).mode()), model.decode(model.encode(x).mode()), rtol=0, atol=0)


def test_ablation_config_written_so_the_official_loader_refuses_it(tmp_path):
    model = SimVAE(SimVAEConfig.preset("sd_vae", **tiny_vae_overrides()))
    model.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert raw["_class_name"] == "SimVAE" and raw["latent_pmrf"]["block_type"] == "sd"
    assert SimVAE.from_pretrained(tmp_path).config == model.config


def test_normalize_latents_round_trip():
    model = SimVAE(SimVAEConfig(**tiny_vae_overrides(), scaling_factor=2.0, shift_factor=-0.5))
    z = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(model.normalize_latents(z), (z + 0.5) * 2.0)
    torch.testing.assert_close(model.denormalize_latents(model.normalize_latents(z)), z)


def test_from_pretrained_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not-here"):
        SimVAE.from_pretrained(tmp_path / "not-here")
    with pytest.raises(FileNotFoundError, match="someone/missing-vae"):
        SimVAE.from_pretrained("someone/missing-vae")  # a repo id not in the (offline) HF cache
    model = SimVAE(SimVAEConfig(**tiny_vae_overrides()))
    model.save_pretrained(tmp_path / "snap")
    (tmp_path / "snap" / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        SimVAE.from_pretrained(tmp_path / "snap")


def test_strict_keys_and_shapes(tmp_path):
    SimVAE(SimVAEConfig(**tiny_vae_overrides())).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / CONFIG_NAME).read_text())
    raw["latent_channels"] = 8  # config no longer matches the weights
    (tmp_path / CONFIG_NAME).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"shape mismatches.*encoder\.conv_out\.weight"):
        SimVAE.from_pretrained(tmp_path)


def test_unknown_config_key_is_named(tmp_path):
    cfg = json.loads(json.dumps({"_class_name": "AutoencoderKLSim", "block_out_channels": [32, 64], "fancy_option": 1}))
    (tmp_path / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="fancy_option"):
        SimVAE.from_config_file(tmp_path / CONFIG_NAME)
    cfg = {"_class_name": "AutoencoderKLSim", "mid_block_type": "UNetMidBlock2D"}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="mid_block_type"):
        SimVAE.from_config_file(tmp_path / CONFIG_NAME)


def test_mid_attention_ablation_has_sd_vaes_mid_block():
    """Table 2 "- 3×3 conv": SD-VAE's mid block (ResBlock, attention, ResBlock), as diffusers'
    AutoencoderKL builds it, in place of Sim-VAE's three ResBlocks."""
    diffusers = pytest.importorskip("diffusers")
    sd = diffusers.AutoencoderKL(block_out_channels=(32, 32), latent_channels=4, norm_num_groups=32)
    ours = SimVAE(SimVAEConfig.preset("sim_vae_c32_mid_attention", block_out_channels=[32, 32]))
    for side in ("encoder", "decoder"):
        theirs, mine = getattr(sd, side).mid_block, getattr(ours, side).mid_block
        assert len(mine.resnets) == len(theirs.resnets) == 2
        assert len(mine.attentions) == len(theirs.attentions) == 1


def test_file_format_module_does_not_import_the_model():
    """vae_hub (the file format) needs only the config: no sim_vae <-> vae_hub import cycle. The model
    module re-exports the config, so ``from ...sim_vae import SimVAE, SimVAEConfig`` keeps working."""
    code = "import sys, latent_pmrf.models.vae_hub; assert 'latent_pmrf.models.sim_vae' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    assert sim_vae.SimVAEConfig is sim_vae_config.SimVAEConfig
    assert sim_vae.SIM_VAE_PRESETS is sim_vae_config.SIM_VAE_PRESETS


@pytest.mark.parametrize("shape,bias", [((2, 5, 7, 9), True), ((1, 3, 1, 4), False), ((1, 16, 8, 8), True)])
def test_upsample_conv_equals_interpolate_then_conv_in_values_and_gradients(shape, bias):
    """The decoder's resize conv (vae_blocks.nearest_upsample_conv3x3) against the official code's
    formulation, nearest x2 then a zero-padded conv3x3, including the borders and odd sizes."""
    from latent_pmrf.models.vae_blocks import nearest_upsample_conv3x3

    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 6, 3, padding=1, bias=bias)
    x = torch.randn(shape, requires_grad=True)
    ref = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    out = nearest_upsample_conv3x3(x, conv.weight, conv.bias)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x, conv.weight], grad)
    grads = torch.autograd.grad(out, [x, conv.weight], grad)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    out_cl = nearest_upsample_conv3x3(x.detach().contiguous(memory_format=torch.channels_last), conv.weight, conv.bias)
    torch.testing.assert_close(out_cl, ref, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", torch.bfloat16):
        ref_bf16 = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        out_bf16 = nearest_upsample_conv3x3(x, conv.weight, conv.bias)
    assert out_bf16.dtype == ref_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16.float(), ref.detach(), rtol=0.05, atol=0.05)
