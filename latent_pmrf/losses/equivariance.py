"""The reflection-equivariant VAE objective of GenSIRR (Stage I, re-VAE) and its measurement.

An observation through glass is I = (1-α)B + αR (background B, reflection R, α in [0, 1]). GenSIRR
asks the encoder to map it to the same mix of the layers' latents:

    L_equiv = ‖μ_E(I) − ((1-α)μ_E(B) + αμ_E(R))‖²                (latent form, the paper's)
    L_equiv = ‖D(E(I)) − ((1-α)D(E(B)) + αD(E(R)))‖²              (pixel form, the official code's)
    L_recon = ‖D(E(x)) − x‖² + 0.1·LPIPS(D(E(x)), x)

The official ``vae_training/train.py`` mixes ``images`` with ``images[torch.randperm(n)]`` but builds
the target from ``reconstructed.flip(0)``: the target's reflection is a different image than the
mixture's (for every sample unless the permutation happens to be the reversal). Here one pairing,
the (background, reflection) index pair, builds both the mixture and the target.

``relative_equivariance_error`` is the scale-free measurement (GenSIRR's Table 1 as a number):
‖μ_E(I) − mix‖² / ‖mix‖² per image, so an encoder cannot lower it by shrinking its latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.reflection import alpha_mix
from ..metrics.base import to_unit_8bit
from ..metrics.distortion import psnr
from .lpips_net import LPIPS_TRUNK_WEIGHTS, build_lpips

EQUIVARIANCE_FORMS = ("latent", "pixel")


def superpose(background: torch.Tensor, reflection: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(1-α)·B + α·R with one α per sample: images or latents (B, C, H, W), alpha (B,)
    (``data.reflection.alpha_mix``, the synthesis' α-mixing form)."""
    return alpha_mix(background, reflection, alpha.to(background.dtype))


def equivariance_loss(of_mixture: torch.Tensor, of_background: torch.Tensor, of_reflection: torch.Tensor,
                      alpha: torch.Tensor) -> torch.Tensor:
    """L_equiv as a mean squared error: ‖f(I) − ((1-α)f(B) + αf(R))‖² averaged over elements, where f
    is the posterior mean (latent form) or the reconstruction (pixel form). Gradients reach both
    sides, as in the paper's formula and the official code."""
    return F.mse_loss(of_mixture.float(), superpose(of_background.float(), of_reflection.float(), alpha))


def relative_equivariance_error(mean_mixture: torch.Tensor, mean_background: torch.Tensor,
                                mean_reflection: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(B,) ‖μ_E(I) − mix‖² / ‖mix‖² per image, mix = (1-α)μ_E(B) + αμ_E(R); in float64."""
    mix = superpose(mean_background.double(), mean_reflection.double(), alpha.double())
    return (mean_mixture.double() - mix).pow(2).flatten(1).sum(1) / mix.pow(2).flatten(1).sum(1)


@torch.no_grad()
def superposition_metrics(vae: nn.Module, background: torch.Tensor, reflection: torch.Tensor,
                          alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image ``equivariance_error`` (relative, posterior means) and ``psnr`` (dB) of the
    reconstruction D(μ_E(I)) of the mixture I against I, for images in [-1, 1]; also the
    ``mixture`` and its ``reconstruction``."""
    mixture = superpose(background, reflection, alpha)
    # one encoder pass: (3B, 3, H, W) -> three (B, C, h, w) posterior means
    means = vae.encode(torch.cat([background, reflection, mixture])).mean
    mean_background, mean_reflection, mean_mixture = means.chunk(3)
    recon = vae.decode(mean_mixture).float().clamp(-1, 1)
    return {"equivariance_error": relative_equivariance_error(mean_mixture, mean_background, mean_reflection, alpha),
            "psnr": psnr(to_unit_8bit(recon), to_unit_8bit(mixture)), "mixture": mixture, "reconstruction": recon}


def reconstruction_lpips(net: str, pretrained: bool) -> nn.Module:
    """LPIPS for L_recon (``lpips_net.build_lpips``); ``pretrained=False`` gives a random trunk with
    the package's linear heads, for tests and smoke runs without the trunk weights on disk."""
    if pretrained:
        return build_lpips(net)
    if net not in LPIPS_TRUNK_WEIGHTS:
        raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_TRUNK_WEIGHTS)}, got {net!r}")
    import lpips

    return lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval().requires_grad_(False)


@dataclass
class ReVAELossConfig:
    mse_weight: float = 1.0  # L_recon = mse_weight·MSE + lpips_weight·LPIPS (GenSIRR: 1 and 0.1)
    lpips_weight: float = 0.1
    lpips_net: str = "alex"  # the official train.py's LPIPS(net="alex")
    lpips_pretrained: bool = True  # False only for tests / smoke runs: a random LPIPS trunk
    kl_weight: float = 0.0  # GenSIRR has no KL term; Sim-VAE was trained with 1e-6
    equivariance_weight: float = 1.0  # λ (the paper sums L_recon + L_equiv)
    equivariance_form: str = "latent"  # "latent" (paper) | "pixel" (official code, ablation)

    def __post_init__(self) -> None:
        if self.equivariance_form not in EQUIVARIANCE_FORMS:
            raise ValueError(f"loss.equivariance_form must be one of {EQUIVARIANCE_FORMS}, "
                             f"got {self.equivariance_form!r}")
        if self.lpips_net not in LPIPS_TRUNK_WEIGHTS:
            raise ValueError(f"loss.lpips_net must be one of {sorted(LPIPS_TRUNK_WEIGHTS)}, got {self.lpips_net!r}")
        for name in ("mse_weight", "lpips_weight", "kl_weight", "equivariance_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")


class ReVAELoss(nn.Module):
    """L_recon + λ·L_equiv on a batch of distinct images and one (background, reflection) pairing
    of them: ``forward(vae, images, background_index, reflection_index, alpha)`` with images
    (N, 3, H, W) in [-1, 1] and three (n,) tensors; returns the terms and ``total``."""

    def __init__(self, cfg: ReVAELossConfig):
        super().__init__()
        self.cfg = cfg
        self.lpips = reconstruction_lpips(cfg.lpips_net, cfg.lpips_pretrained) if cfg.lpips_weight > 0 else None

    def train(self, mode: bool = True) -> ReVAELoss:
        super().train(mode)
        if self.lpips is not None:
            self.lpips.eval()  # frozen network, no dropout
        return self

    def forward(self, vae: nn.Module, images: torch.Tensor, background_index: torch.Tensor,
                reflection_index: torch.Tensor, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, n_images = self.cfg, images.shape[0]
        mixture = superpose(images[background_index], images[reflection_index], alpha)
        # One encoder pass over the images and their mixtures: (N + n, 3, H, W) -> q(z|.)
        posterior = vae.encode(torch.cat([images, mixture]))
        latents = posterior.sample()
        pixel = cfg.equivariance_form == "pixel"
        # Decode the images (L_recon) and, for the pixel form, the mixtures too (posterior samples, as
        # the official code).
        recon = vae.decode(latents if pixel else latents[:n_images]).float()
        terms = {"mse": F.mse_loss(recon[:n_images], images.float())}
        total = cfg.mse_weight * terms["mse"]
        if self.lpips is not None:
            terms["lpips"] = self.lpips(recon[:n_images], images.float()).mean()
            total = total + cfg.lpips_weight * terms["lpips"]
        if cfg.kl_weight > 0:
            terms["kl"] = posterior.kl()[:n_images].mean()
            total = total + cfg.kl_weight * terms["kl"]
        of = recon if pixel else posterior.mean
        of_images, of_mixture = of[:n_images], of[n_images:]
        terms["equivariance"] = equivariance_loss(of_mixture, of_images[background_index], of_images[reflection_index],
                                                  alpha)
        terms["total"] = total + cfg.equivariance_weight * terms["equivariance"]
        return terms
