"""Where the flow runs: a VAE's latent space (Latent-PMRF) or pixel space (PMRF).

Both map an image in [-1, 1] to the flow's space and back, and build the source sample
Z0 = E(clip(f(y), -1, 1)) + σ_s·ε (latent) or f(y) + σ_s·ε (pixel), paper Sec. 3.1 / Fig. 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..models.gaussian import DiagonalGaussian
from ..models.tiling import tiled

if TYPE_CHECKING:
    from ..models.autoencoder import Autoencoder


class PixelSpace(nn.Module):
    """Identity space. PMRF works on [0, 1] images with σ_s = 0.1; on our [-1, 1] images the same
    noise is σ_s = 0.2 (the pixel config's default)."""

    scale_factor = 1

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


class LatentSpace(nn.Module):
    """A frozen VAE: z = (E(x) - shift_factor) · scaling_factor, x = D(z / scaling_factor + shift_factor).

    Any ``Autoencoder`` (Sim-VAE, or a diffusers AutoencoderKL such as SD1.5/SDXL/FLUX/SD3).
    ``sample_posterior=True`` encodes with a posterior sample, as the official pipeline does;
    False uses the posterior mean. The VAE is kept in eval mode and never receives gradients.
    Images above ``tile_above_pixels`` are encoded and decoded in overlapping ``tile``² tiles
    (``models/tiling.py``), so memory stays bounded at any size.
    """

    def __init__(self, vae: Autoencoder, sample_posterior: bool = True, tile: int = 512, tile_overlap: int = 192,
                 tile_above_pixels: int = 1024 * 1024):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.sample_posterior = sample_posterior
        f = vae.downsample_factor
        if tile % f or tile_overlap % f or not 0 <= tile_overlap < tile:
            raise ValueError(f"VAE tiles: tile {tile} and overlap {tile_overlap} must be multiples of {f}, overlap < tile")
        self.tile, self.tile_overlap, self.tile_above_pixels = tile, tile_overlap, tile_above_pixels

    @property
    def scale_factor(self) -> int:
        """Image side / latent side: the VAE's downsampling factor (8 for every VAE of the paper)."""
        return self.vae.downsample_factor

    def train(self, mode: bool = True) -> LatentSpace:  # the VAE stays frozen in eval mode
        return super().train(False)

    def _tiles(self, pixels: int) -> bool:
        return pixels > self.tile_above_pixels

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x), tile by tile for a large image (mean and log-variance blended at the seams)."""
        if not self._tiles(x.shape[-2] * x.shape[-1]):
            return self.vae.encode(x)

        def moments(tile: torch.Tensor) -> torch.Tensor:
            q = self.vae.encode(tile)
            return torch.cat([q.mean, q.logvar], dim=1)

        mean, logvar = tiled(moments, x, self.tile, self.tile_overlap, 1 / self.scale_factor).chunk(2, dim=1)
        return DiagonalGaussian(mean=mean, logvar=logvar)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        posterior = self.posterior(x)
        z = posterior.sample(generator=generator) if self.sample_posterior else posterior.mode()
        return self.vae.normalize_latents(z)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = self.vae.denormalize_latents(z)
        f = self.scale_factor
        if not self._tiles(z.shape[-2] * z.shape[-1] * f * f):
            return self.vae.decode(z)
        return tiled(self.vae.decode, z, self.tile // f, self.tile_overlap // f, f)


def source_sample(space: nn.Module, posterior_mean: torch.Tensor, noise_std: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Z0 = space(clip(f(y), -1, 1)) + σ_s·ε."""
    z = space.encode(posterior_mean.clamp(-1, 1), generator=generator)
    noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return z + noise_std * noise
