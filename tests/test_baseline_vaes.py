"""The sd_vae preset and the diffusers baselines, checked against diffusers itself."""

import pytest
import torch

from conftest import randomize

diffusers = pytest.importorskip("diffusers", reason="diffusers is the 'baselines' extra")

from latent_pmrf.models.baseline_vaes import load_baseline_vae, sd_vae_state_dict_from_diffusers  # noqa: E402
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig  # noqa: E402

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
