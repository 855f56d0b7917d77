"""Tiled VAE encode/decode (issue 15, images of any size): equal to untiled on an image small
enough for both, and the blending is exact for a pointwise function."""

import pytest
import torch

from latent_pmrf.flow.spaces import LatentSpace
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
from latent_pmrf.models.tiling import tile_starts, tiled


def test_tile_starts_cover_the_image_with_the_overlap():
    for size, tile, overlap in [(100, 32, 8), (64, 32, 8), (33, 32, 8), (20, 32, 8), (96, 32, 0)]:
        starts = tile_starts(size, tile, overlap)
        covered = torch.zeros(size, dtype=torch.bool)
        for s in starts:
            covered[s:s + tile] = True
        assert covered.all() and starts[-1] == max(0, size - tile)
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_blend_is_exact_for_a_pointwise_map_at_any_scale():
    x = torch.randn(2, 3, 70, 53)
    torch.testing.assert_close(tiled(lambda t: 2 * t + 1, x, 32, 8, 1), 2 * x + 1)
    up = tiled(lambda t: torch.repeat_interleave(torch.repeat_interleave(t, 2, -1), 2, -2), x, 32, 8, 2)
    torch.testing.assert_close(up, torch.repeat_interleave(torch.repeat_interleave(x, 2, -1), 2, -2))


def test_tiled_vae_equals_untiled_within_tolerance():
    torch.manual_seed(0)
    vae = SimVAE(SimVAEConfig(block_out_channels=[16, 16, 32, 32], layers_per_block=1, layers_mid_block=1,
                              latent_channels=4)).eval()
    x = torch.rand(1, 3, 256, 320) * 2 - 1
    whole = LatentSpace(vae, sample_posterior=False, tile_above_pixels=10**9)
    z, d = whole.encode(x), whole.decode(whole.encode(x))
    errors = []
    for tile, overlap in [(128, 64), (192, 128), (256, 192)]:
        tiles = LatentSpace(vae, sample_posterior=False, tile=tile, tile_overlap=overlap, tile_above_pixels=0)
        errors.append((float((tiles.encode(x) - z).abs().max() / z.std()),
                       float((tiles.decode(z) - d).abs().max() / d.std())))
    # This random f8 encoder sees ~60 px around a pixel: with a 48-px blind margin (overlap 192) the
    # tiled result is within 1 % (max abs error / std) of the untiled one, and more overlap helps.
    assert errors[-1][0] < 0.01 and errors[-1][1] < 0.01, errors
    assert errors[0][0] > errors[1][0] > errors[2][0] and errors[0][1] > errors[1][1] > errors[2][1], errors


def test_tile_sizes_are_checked():
    vae = SimVAE(SimVAEConfig(block_out_channels=[8, 8], layers_per_block=1, latent_channels=4))
    with pytest.raises(ValueError, match="multiples of 2"):
        LatentSpace(vae, tile=33)
