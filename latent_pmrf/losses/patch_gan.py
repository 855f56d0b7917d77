"""Optional PatchGAN adversarial term for autoencoder training (off in the paper, App. B.2).

The pix2pix/VQGAN ``NLayerDiscriminator`` with hinge losses. Both losses come out of one
backward pass: the generator term evaluates the discriminator with detached parameters
(``torch.func.functional_call``), so it only moves the generator, and the discriminator term
sees detached reconstructions, so it only moves the discriminator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for i in range(1, layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))  # (B, 1, h, w) patch logits
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def generator_hinge_loss(disc: PatchDiscriminator, fake: torch.Tensor) -> torch.Tensor:
    """-E[D(fake)] with D's parameters detached: gradients reach the generator only."""
    params = {k: v.detach() for k, v in disc.named_parameters()}
    return -functional_call(disc, params, (fake,)).mean()


def discriminator_hinge_loss(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[relu(1 - D(real))] + E[relu(1 + D(fake))], on detached images."""
    return F.relu(1 - disc(real.detach())).mean() + F.relu(1 + disc(fake.detach())).mean()
