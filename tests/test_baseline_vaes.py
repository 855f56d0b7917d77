"""The sd_vae preset and the diffusers baselines, checked against diffusers itself."""

import pytest
import torch

from conftest import randomize

diffusers = pytest.importorskip("diffusers", reason="diffusers is the 'baselines' extra")

from latent_pmrf.models.autoencoder import (Autoencoder, autoencoder_config, autoencoder_from_config,  # noqa: E402
                                            load_autoencoder)
from latent_pmrf.models.baseline_vaes import (BASELINE_VAES, DiffusersVAE, load_baseline_vae,  # noqa: E402
                                              sd_vae_state_dict_from_diffusers)
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig  # noqa: E402
from latent_pmrf.models.vae_hub import config_to_dict  # noqa: E402

WIDTHS = [32, 64, 64]


def tiny_autoencoder_kl(latent_channels: int = 4):
    n = len(WIDTHS)
    return diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(WIDTHS), layers_per_block=1, latent_channels=latent_channels, norm_num_groups=32,
    )


def test_sd_vae_preset_equals_diffusers_autoencoder_kl():
    peer = randomize(tiny_autoencoder_kl())
    ours = SimVAE(SimVAEConfig.preset("sd_vae", block_out_channels=WIDTHS, layers_per_block=1, latent_channels=4)).eval()
    ours.load_state_dict(sd_vae_state_dict_from_diffusers(peer.state_dict()), strict=True)
    x = torch.rand(2, 3, 32, 24) * 2 - 1
    with torch.no_grad():
        dist = peer.encode(x).latent_dist
        post = ours.encode(x)
        torch.testing.assert_close(post.mean, dist.mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(post.logvar, dist.logvar, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.decode(post.mean), peer.decode(dist.mean).sample, rtol=1e-4, atol=1e-4)


def test_baseline_wrapper_loads_a_diffusers_directory(tmp_path):
    peer = randomize(tiny_autoencoder_kl(latent_channels=16))
    peer.register_to_config(scaling_factor=0.3611, shift_factor=0.1159)  # FLUX-VAE's factors
    peer.save_pretrained(tmp_path)
    vae = load_baseline_vae(tmp_path)
    assert vae.latent_channels == 16 and vae.downsample_factor == 4
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).mode()
        torch.testing.assert_close(z, peer.encode(x).latent_dist.mode())
        torch.testing.assert_close(vae.decode(z), peer.decode(z).sample)
    torch.testing.assert_close(vae.normalize_latents(z), (z - 0.1159) * 0.3611)


def test_missing_baseline_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        load_baseline_vae(tmp_path / "nothing-here")


def test_both_vae_classes_satisfy_the_autoencoder_protocol():
    sim = SimVAE(SimVAEConfig.preset("sim_vae_c16", block_out_channels=[32, 32], layers_per_block=1,
                                     scaling_factor=0.5, shift_factor=0.2))
    kl = DiffusersVAE(tiny_autoencoder_kl(latent_channels=16))
    for vae in (sim, kl):
        assert isinstance(vae, Autoencoder)
    assert (sim.downsample_factor, sim.latent_channels, sim.scaling_factor, sim.shift_factor) == (2, 16, 0.5, 0.2)
    assert (kl.downsample_factor, kl.latent_channels) == (4, 16)


def test_diffusers_vae_rebuilds_from_its_stored_config(tmp_path):
    """What a flow checkpoint stores: plain types (weights_only load), then the same network."""
    peer = randomize(tiny_autoencoder_kl(latent_channels=16))
    peer.register_to_config(scaling_factor=0.3611, shift_factor=0.1159)
    vae = DiffusersVAE(peer)
    torch.save({"vae": autoencoder_config(vae)}, tmp_path / "hp.pt")
    raw = torch.load(tmp_path / "hp.pt", weights_only=True)["vae"]
    assert raw["_class_name"] == "AutoencoderKL" and raw["block_out_channels"] == WIDTHS
    rebuilt = autoencoder_from_config(raw)
    assert isinstance(rebuilt, DiffusersVAE) and (rebuilt.scaling_factor, rebuilt.shift_factor) == (0.3611, 0.1159)
    rebuilt.load_state_dict(vae.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = peer.decode(peer.encode(x).latent_dist.mode()).sample
        torch.testing.assert_close(rebuilt.decode(rebuilt.encode(x).mode()), expected)


def test_sim_vae_stored_config_still_rebuilds_a_sim_vae():
    """Flow checkpoints written before the Autoencoder interface store ``config_to_dict``."""
    cfg = SimVAEConfig(block_out_channels=[8, 8], layers_per_block=1, layers_mid_block=1, latent_channels=4)
    rebuilt = autoencoder_from_config(config_to_dict(cfg))
    assert isinstance(rebuilt, SimVAE) and rebuilt.config == cfg
    with pytest.raises(ValueError, match="UNet2DConditionModel"):
        autoencoder_from_config({"_class_name": "UNet2DConditionModel"})


@pytest.mark.parametrize("name", sorted(BASELINE_VAES))
def test_short_name_missing_from_the_cache_is_a_clear_error(name):
    from huggingface_hub import try_to_load_from_cache

    repo, sub = BASELINE_VAES[name]
    if isinstance(try_to_load_from_cache(repo, f"{sub}/config.json" if sub else "config.json"), str):
        pytest.skip(f"{repo} is in the Hugging Face cache")
    with pytest.raises(FileNotFoundError, match=f"{name}.*{repo}"):
        load_autoencoder(name)
