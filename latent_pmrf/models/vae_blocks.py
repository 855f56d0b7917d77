"""Building blocks of the Sim-VAE family (paper Appendix B.1, Figs. 6-7).

Every block here is switchable between the Sim-VAE design and the SD-VAE design it simplifies,
so the ablations of Table 2 are configurations of one model, not forks:

* ``SimpleResBlock`` -- Fig. 6 (right): one norm, conv3x3 -> SiLU -> conv3x3, plus skip.
* ``SDResBlock``     -- Fig. 6 (left): the VQGAN/SD-VAE block with two norms and two activations.
* ``Downsample`` / ``Upsample`` -- Fig. 7: the resizing convs, which either change the channel
  count themselves ("fused", Sim-VAE) or keep it ("separate", SD-VAE).
* ``MidAttention`` -- the single-head self-attention that SD-VAE puts between mid-block ResBlocks
  and Sim-VAE removes.

State-dict names follow the official release (``norm``, ``conv1``, ``conv2``, ``downsampler.conv``,
``upsampler.conv``) so that its ``diffusion_pytorch_model.safetensors`` loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class ChannelLayerNorm(nn.LayerNorm):
    """Pixel-wise LayerNorm: normalises the C channels of each (h, w) position of an NCHW tensor.

    Parameters are (C,)-shaped like ``nn.LayerNorm(C)``, matching the official weights.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, H, W, C) -> normalise C -> back, returned in the input's memory
        # layout. The official code returns the permuted view (channels_last strides), so every
        # following conv silently runs channels_last; on CPU that makes conv backward ~3x slower
        # (benchmarks/vae_speed.py). For a channels_last input both permutes are free views.
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous(memory_format=layout)


def make_norm(norm_type: str, channels: int, eps: float, groups: int) -> nn.Module:
    if norm_type == "layer_norm":
        return ChannelLayerNorm(channels, eps=eps)
    if norm_type == "group_norm":
        return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=eps, affine=True)
    raise ValueError(f"norm_type must be 'layer_norm' or 'group_norm', got {norm_type!r}")


class SimpleResBlock(nn.Module):
    """Sim-VAE ResBlock (Fig. 6): pre-norm -> conv3x3 -> SiLU -> conv3x3, plus skip.

    ``norm_position="post_norm"`` moves the single norm after the residual sum (Table 2 switch).
    When ``in_channels != out_channels`` (only with separate resizing) a 1x1 conv carries the skip.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, norm_position: str,
                 eps: float, groups: int):
        super().__init__()
        if norm_position not in ("pre_norm", "post_norm"):
            raise ValueError(f"norm_position must be 'pre_norm' or 'post_norm', got {norm_position!r}")
        self.pre_norm = norm_position == "pre_norm"
        self.norm = make_norm(norm_type, in_channels if self.pre_norm else out_channels, eps, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h = self.norm(x) if self.pre_norm else x
        out = self.conv2(F.silu(self.conv1(h))) + skip
        return out if self.pre_norm else self.norm(out)


class SDResBlock(nn.Module):
    """SD-VAE ResBlock (Fig. 6, left): norm -> SiLU -> conv3x3 -> norm -> SiLU -> conv3x3, plus skip.

    Names match diffusers' ``ResnetBlock2D`` so SD-VAE weights map one to one.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, norm_position: str,
                 eps: float, groups: int):
        super().__init__()
        if norm_position != "pre_norm":
            raise ValueError("the SD-VAE ResBlock is pre-norm only; set norm_position='pre_norm'")
        self.norm1 = make_norm(norm_type, in_channels, eps, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = make_norm(norm_type, out_channels, eps, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return skip + h


RES_BLOCKS = {"simple": SimpleResBlock, "sd": SDResBlock}


class MidAttention(nn.Module):
    """Single-head spatial self-attention with pre-norm and residual (SD-VAE mid block)."""

    def __init__(self, channels: int, norm_type: str, eps: float, groups: int):
        super().__init__()
        self.norm = make_norm(norm_type, channels, eps, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        # (B, HW, C) with one head of dimension C; softmax scale C^-1/2.
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        out = self.to_out[0](out)
        return x + rearrange(out, "b (h w) c -> b c h w", h=h, w=w)


class Downsample(nn.Module):
    """Stride-2 conv3x3. Sim-VAE ('fused') changes channels here; SD-VAE keeps them.

    ``padding="same"`` pads 1 on every side (official Sim-VAE); ``"asymmetric"`` pads only
    right/bottom by 1 and convolves without padding (diffusers' SD-VAE ``Downsample2D``).
    """

    def __init__(self, in_channels: int, out_channels: int, padding: str):
        super().__init__()
        if padding not in ("same", "asymmetric"):
            raise ValueError(f"downsample_padding must be 'same' or 'asymmetric', got {padding!r}")
        self.asymmetric = padding == "asymmetric"
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=0 if self.asymmetric else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.asymmetric:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


def _fold_taps(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3 taps of a kernel along ``dim`` as they fall on the input before a nearest x2 upsampling:
    output phase 0 (even rows) reads input rows (i-1, i, i), phase 1 (odd rows) (i, i, i+1)."""
    t0, t1, t2 = weight.unbind(dim)
    return torch.stack([t0, t1 + t2], dim), torch.stack([t0 + t1, t2], dim)


def nearest_upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv3x3(nearest_x2(x))`` with zero padding, computed without the upsampled tensor: each of
    the four output phases (row parity a, column parity c) is a 2x2 conv of ``x`` whose taps are
    sums of the 3x3 ones, padded on the side its taps reach, and the phases are interleaved. Equal
    up to float rounding (~1e-6), with 4/9 of the multiply-adds; on the 2-core CPU 1.9-2.5x faster
    than interpolate + conv at the Sim-VAE decoder's sizes, fwd and fwd+bwd (not measured on a GPU)."""
    h, w = x.shape[-2:]
    kernels = [k for rows in _fold_taps(weight, 2) for k in _fold_taps(rows, 3)]  # (a, c) = 00, 01, 10, 11
    # phase (a, c) reads input rows (i - 1 + a, i + a) and columns (j - 1 + c, j + c)
    phases = [F.conv2d(F.pad(x, (1 - c, c, 1 - a, a)), kernels[2 * a + c], bias) for a in (0, 1) for c in (0, 1)]
    rows = [torch.stack(phases[2 * a:2 * a + 2], dim=-1) for a in (0, 1)]  # (B, C, h, w, c)
    y = torch.stack(rows, dim=3).reshape(x.shape[0], weight.shape[0], 2 * h, 2 * w)  # (B, C, h, a, w, c) -> 2h x 2w
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


class Upsample(nn.Module):
    """x2 upsampling then conv3x3: nearest interpolation (official default; computed by
    ``nearest_upsample_conv3x3``, same weights and outputs) or pixel shuffle."""

    def __init__(self, in_channels: int, out_channels: int, method: str):
        super().__init__()
        if method not in ("interpolate", "pixel_shuffle"):
            raise ValueError(f"upsample_method must be 'interpolate' or 'pixel_shuffle', got {method!r}")
        self.pixel_shuffle = method == "pixel_shuffle"
        self.conv = nn.Conv2d(in_channels, out_channels * (4 if self.pixel_shuffle else 1), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pixel_shuffle:
            return F.pixel_shuffle(self.conv(x), 2)
        return nearest_upsample_conv3x3(x, self.conv.weight, self.conv.bias)
