"""Diagonal Gaussian posterior q(z|x) of a KL autoencoder (same conventions as diffusers)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), built from the encoder's 2*C output channels.

    ``logvar`` is clamped to [-30, 20] as in the official code (diffusers' ``DiagonalGaussianDistribution``).
    """

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> "DiagonalGaussian":
        # (B, 2C, h, w) -> two (B, C, h, w)
        mean, logvar = torch.chunk(moments, 2, dim=1)
        return cls(mean=mean, logvar=torch.clamp(logvar, -30.0, 20.0))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw z = mean + std * eps; ``generator`` fixes eps (drawn on its device)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over (C, h, w): one value per sample, shape (B,)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=(1, 2, 3))
