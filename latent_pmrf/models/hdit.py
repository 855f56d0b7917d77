"""Hourglass Diffusion Transformer (HDiT, Crowson et al. 2024) as the PMRF velocity model v_θ(x_t, t).

k-diffusion's ``image_transformer_v2`` semantics: tokens (B, H, W, C); levels of
neighbourhood-attention layers at high resolution and global attention at the lowest; axial RoPE
on half of each head's dimensions; cosine-similarity attention with a learned per-head scale
(init 10); AdaRMSNorm whose scale is 1 + zero-initialised Linear(cond); GEGLU feed-forward;
2×2 token merge, and split that lerps with the skip by a learned factor (init 0.5); zero-init
output projections. Time t ∈ [0, 1] enters through Fourier features and the mapping network, as
in PMRF (which feeds t itself, not k-diffusion's log(σ)/4).

``aug_cond``: k-diffusion's augmentation conditioning, Fourier features of a 9-value augmentation
vector projected into the mapping input. PMRF's HDiT carries it and always feeds zeros, which adds
a learned constant to the mapping input; the ``hdit_pmrf`` preset has it so PMRF's released weights
load into this model one to one.

Latent-PMRF's options (paper Sec. 4.1): ``patch_size=1``, ``patch_embed="conv"`` (3×3 conv in/out
instead of a linear patchifier) and depthwise 3×3 convs after the qkv projection and inside the
feed-forward (``attn_dwconv`` / ``ff_dwconv``; the paper puts them in both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import neighborhood_attention
from .checkpointing import Level, set_activation_checkpointing
from .task_embedding import TaskEmbedding, TaskEmbeddingConfig, task_vectors

AUG_COND_FEATURES = 9  # k-diffusion's augmentation vector (KarrasAugmentWrapper); not configurable there


# ---------------------------------------------------------------------------------------- config
@dataclass
class HDiTLevelConfig:
    depth: int
    width: int
    attention: str = "neighborhood"  # "neighborhood" | "global"
    d_head: int = 64
    kernel_size: int = 7  # neighbourhood size (NA levels only)
    d_ff: Optional[int] = None  # default 3 × width (PMRF)
    dropout: float = 0.0


@dataclass
class HDiTConfig:
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int = 4
    levels: list[HDiTLevelConfig] = field(default_factory=list)
    mapping_depth: int = 2
    mapping_width: int = 768
    mapping_d_ff: Optional[int] = None  # default 3 × mapping_width
    patch_embed: str = "linear"  # "linear" (k-diffusion TokenMerge) | "conv" (3×3 conv, patch_size 1)
    attn_dwconv: bool = False
    ff_dwconv: bool = False
    aug_cond: bool = False  # k-diffusion's aug_emb / aug_in_proj (PMRF's HDiT has them)
    activation_checkpointing: bool = False  # recompute block activations in backward (models/checkpointing.py)
    family: str = "hdit"  # velocity-model family (models/velocity.py); fixed for this class
    # GenSIRR's learnable task embedding, added to the mapping input (models/task_embedding.py)
    task_embedding: TaskEmbeddingConfig = field(default_factory=TaskEmbeddingConfig)

    def __post_init__(self) -> None:
        if self.family != "hdit":
            raise ValueError(f"HDiTConfig.family is 'hdit', got {self.family!r}: choose another family's model "
                             "with model.preset (e.g. latent_pmrf_official)")
        self.levels = [lvl if isinstance(lvl, HDiTLevelConfig) else HDiTLevelConfig(**lvl) for lvl in self.levels]
        if isinstance(self.task_embedding, dict):
            self.task_embedding = TaskEmbeddingConfig(**self.task_embedding)
        if not self.levels:
            raise ValueError("HDiTConfig.levels is empty")
        for i, lvl in enumerate(self.levels):
            if lvl.attention not in ("neighborhood", "global"):
                raise ValueError(f"levels[{i}].attention must be 'neighborhood' or 'global', got {lvl.attention!r}")
            if lvl.width % lvl.d_head:
                raise ValueError(f"levels[{i}].width {lvl.width} is not a multiple of d_head {lvl.d_head}")
            if lvl.d_head % 4:
                raise ValueError(f"levels[{i}].d_head must be a multiple of 4 (axial RoPE), got {lvl.d_head}")
        if self.patch_embed not in ("linear", "conv"):
            raise ValueError(f"patch_embed must be 'linear' or 'conv', got {self.patch_embed!r}")
        if self.patch_embed == "conv" and self.patch_size != 1:
            raise ValueError("patch_embed='conv' works on patch_size=1")

    @property
    def multiple(self) -> int:
        """Inputs must have H and W divisible by this."""
        return self.patch_size * 2 ** (len(self.levels) - 1)

    @classmethod
    def preset(cls, name: str, **overrides) -> HDiTConfig:
        if name not in HDIT_PRESETS:
            raise KeyError(f"unknown HDiT preset {name!r}; available: {sorted(HDIT_PRESETS)}")
        values = {**HDIT_PRESETS[name], **overrides}
        values["levels"] = [dict(lvl) for lvl in values["levels"]]
        return cls(**values)


HDIT_PRESETS: dict[str, dict] = {
    # PMRF's pixel-space model (arch "hdit_ImageNet256Sp4"): 512² RGB, 4×4 patches -> 128² tokens,
    # with k-diffusion's (zero-fed) augmentation conditioning as in PMRF's ImageTransformerDenoiserModelV2.
    "hdit_pmrf": dict(
        in_channels=3, out_channels=3, patch_size=4, mapping_depth=2, mapping_width=768, aug_cond=True,
        levels=[dict(depth=2, width=256, attention="neighborhood", kernel_size=7),
                dict(depth=2, width=512, attention="neighborhood", kernel_size=7),
                dict(depth=8, width=1024, attention="global")]),
    # Latent-PMRF (paper Sec. 4.1): 64² latents of Sim-VAE c32, patch 1, depths 2/4/6 with
    # NA/NA/global, conv patch embedding, depthwise convs. The paper does not publish the widths;
    # we keep PMRF's 256/512/1024 so the two models differ only where the paper says they do.
    "hdit_latent_pmrf": dict(
        in_channels=32, out_channels=32, patch_size=1, mapping_depth=2, mapping_width=768,
        patch_embed="conv", attn_dwconv=True, ff_dwconv=True,
        levels=[dict(depth=2, width=256, attention="neighborhood", kernel_size=7),
                dict(depth=4, width=512, attention="neighborhood", kernel_size=7),
                dict(depth=6, width=1024, attention="global")]),
}


# ---------------------------------------------------------------------------------------- pieces
def zero_init(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """x · scale / sqrt(mean(x²) + eps) over the last dim, computed in at least float32."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, scale.dtype), torch.float32)
    mean_sq = x.to(dtype).pow(2).mean(dim=-1, keepdim=True)
    return x * (scale.to(dtype) * torch.rsqrt(mean_sq + eps)).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.scale, self.eps)


class AdaRMSNorm(nn.Module):
    """RMSNorm with scale 1 + Linear(cond) (zero-init, so it starts as a plain RMSNorm)."""

    def __init__(self, features: int, cond_features: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.linear = zero_init(nn.Linear(cond_features, features, bias=False))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.linear(cond)[:, None, None, :] + 1, self.eps)


class GEGLU(nn.Linear):
    """Linear to 2·d_ff, optionally a depthwise 3×3 conv, then a · GELU(gate)."""

    def __init__(self, in_features: int, out_features: int, dwconv: bool = False):
        super().__init__(in_features, out_features * 2, bias=False)
        self.dwconv = DepthwiseConv(out_features * 2) if dwconv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.dwconv is not None:
            x = self.dwconv(x)
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate)


class DepthwiseConv(nn.Conv2d):
    """Depthwise 3×3 conv on (B, H, W, C) tokens (Latent-PMRF's local mixing)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, padding=1, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class FourierFeatures(nn.Module):
    def __init__(self, in_features: int, out_features: int, std: float = 1.0):
        super().__init__()
        self.register_buffer("weight", torch.randn(out_features // 2, in_features) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


# ---------------------------------------------------------------------------------------- positions
def make_axial_pos(h: int, w: int, device=None) -> torch.Tensor:
    """(h, w, 2) patch centres (y, x) in a box spanning [-1, 1] along the longer side."""
    ar = w / h
    y_lim, x_lim = (1 / ar, 1.0) if ar > 1 else (1.0, ar)

    def centers(lim: float, n: int) -> torch.Tensor:
        edges = torch.linspace(-lim, lim, n + 1, device=device)
        return (edges[:-1] + edges[1:]) / 2

    return torch.stack(torch.meshgrid(centers(y_lim, h), centers(x_lim, w), indexing="ij"), dim=-1)


def downscale_pos(pos: torch.Tensor) -> torch.Tensor:
    return rearrange(pos, "(h nh) (w nw) e -> h w (nh nw) e", nh=2, nw=2).mean(dim=-2)


class AxialRoPE(nn.Module):
    """Rotary angles for (y, x) positions: per head, d_head/8 log-spaced frequencies in [π, 10π)."""

    def __init__(self, d_head: int, n_heads: int):
        super().__init__()
        n_freqs = d_head // 8
        freqs = torch.linspace(math.log(math.pi), math.log(10 * math.pi), n_heads * n_freqs + 1)[:-1].exp()
        self.register_buffer("freqs", freqs.view(n_freqs, n_heads).T.contiguous(), persistent=False)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        """pos (..., 2) -> theta (..., n_heads, d_head/4)."""
        return torch.cat([pos[..., None, 0:1] * self.freqs, pos[..., None, 1:2] * self.freqs], dim=-1)


def apply_rotary(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[:d], x[d:2d]) by theta (d = theta's last dim); the rest passes through."""
    d = theta.shape[-1]
    dtype = torch.promote_types(x.dtype, torch.float32)
    x1, x2, rest = x[..., :d].to(dtype), x[..., d : 2 * d].to(dtype), x[..., 2 * d :]
    cos, sin = theta.cos().to(dtype), theta.sin().to(dtype)
    return torch.cat([(x1 * cos - x2 * sin).to(x.dtype), (x2 * cos + x1 * sin).to(x.dtype), rest], dim=-1)


def cosine_sim_scale(q: torch.Tensor, k: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6):
    """Unit-normalise q and k per head and multiply each by sqrt(scale): q·k = scale · cos(q, k)."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    sqrt_scale = scale.to(dtype).sqrt()
    q = q * (sqrt_scale * torch.rsqrt(q.to(dtype).pow(2).sum(-1, keepdim=True) + eps)).to(q.dtype)
    k = k * (sqrt_scale * torch.rsqrt(k.to(dtype).pow(2).sum(-1, keepdim=True) + eps)).to(k.dtype)
    return q, k


# ---------------------------------------------------------------------------------------- blocks
class SelfAttentionBlock(nn.Module):
    """Pre-AdaRMSNorm attention with residual; global or neighbourhood (k×k, NATTEN semantics)."""

    def __init__(self, d_model: int, lvl: HDiTLevelConfig, cond_features: int, dwconv: bool):
        super().__init__()
        self.d_head, self.n_heads = lvl.d_head, d_model // lvl.d_head
        self.kernel_size = lvl.kernel_size if lvl.attention == "neighborhood" else None
        self.norm = AdaRMSNorm(d_model, cond_features)
        self.qkv_proj = nn.Linear(d_model, d_model * 3, bias=False)
        self.dwconv = DepthwiseConv(d_model * 3) if dwconv else None
        self.scale = nn.Parameter(torch.full([self.n_heads], 10.0))
        self.pos_emb = AxialRoPE(lvl.d_head, self.n_heads)
        self.dropout = nn.Dropout(lvl.dropout)
        self.out_proj = zero_init(nn.Linear(d_model, d_model, bias=False))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        qkv = self.qkv_proj(self.norm(x, cond))
        if self.dwconv is not None:
            qkv = self.dwconv(qkv)
        q, k, v = rearrange(qkv, "b h w (t nh e) -> t b h w nh e", t=3, e=self.d_head)
        q, k = cosine_sim_scale(q, k, self.scale[:, None])
        theta = self.pos_emb(pos.to(qkv.dtype))  # (h, w, nh, d/4)
        q, k = apply_rotary(q, theta), apply_rotary(k, theta)
        if self.kernel_size is not None:
            # scale 1: the learned cosine-similarity scale is already in q·k (k-diffusion).
            out = neighborhood_attention(q, k, v, self.kernel_size, scale=1.0)
        else:
            q, k, v = (rearrange(t, "b h w nh e -> b nh (h w) e") for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
            out = rearrange(out, "b nh (h w) e -> b h w nh e", h=h, w=w)
        out = self.out_proj(self.dropout(rearrange(out, "b h w nh e -> b h w (nh e)")))
        return x + out


class FeedForwardBlock(nn.Module):
    def __init__(self, d_model: int, d_ff: int, cond_features: int, dropout: float, dwconv: bool):
        super().__init__()
        self.norm = AdaRMSNorm(d_model, cond_features)
        self.up_proj = GEGLU(d_model, d_ff, dwconv=dwconv)
        self.dropout = nn.Dropout(dropout)
        self.down_proj = zero_init(nn.Linear(d_ff, d_model, bias=False))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x + self.down_proj(self.dropout(self.up_proj(self.norm(x, cond))))


class TransformerLayer(nn.Module):
    def __init__(self, lvl: HDiTLevelConfig, cond_features: int, attn_dwconv: bool, ff_dwconv: bool):
        super().__init__()
        self.self_attn = SelfAttentionBlock(lvl.width, lvl, cond_features, attn_dwconv)
        self.ff = FeedForwardBlock(lvl.width, lvl.d_ff or 3 * lvl.width, cond_features, lvl.dropout, ff_dwconv)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.ff(self.self_attn(x, pos, cond), cond)


class MappingNetwork(nn.Module):
    """RMSNorm -> depth × (RMSNorm -> GEGLU -> zero-init Linear, residual) -> RMSNorm."""

    def __init__(self, depth: int, width: int, d_ff: int):
        super().__init__()
        self.in_norm = RMSNorm(width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(norm=RMSNorm(width), up_proj=GEGLU(width, d_ff),
                               down_proj=zero_init(nn.Linear(d_ff, width, bias=False)))) for _ in range(depth))
        self.out_norm = RMSNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_norm(x)
        for b in self.blocks:
            x = x + b["down_proj"](b["up_proj"](b["norm"](x)))
        return self.out_norm(x)


class TokenMerge(nn.Module):
    """(B, H, W, C) -> (B, H/p, W/p, C') by a linear map of each p×p patch."""

    def __init__(self, in_features: int, out_features: int, patch: int = 2):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(in_features * patch * patch, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(rearrange(x, "b (h nh) (w nw) e -> b h w (nh nw e)", nh=self.patch, nw=self.patch))


class TokenSplit(nn.Module):
    """(B, H, W, C) -> (B, pH, pW, C'); with a skip, lerp(skip, x, fac) with learned fac (init 0.5)."""

    def __init__(self, in_features: int, out_features: int, patch: int = 2, with_skip: bool = True):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(in_features, out_features * patch * patch, bias=False)
        self.fac = nn.Parameter(torch.full([1], 0.5)) if with_skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = rearrange(self.proj(x), "b h w (nh nw e) -> b (h nh) (w nw) e", nh=self.patch, nw=self.patch)
        return x if skip is None else torch.lerp(skip, x, self.fac.to(x.dtype))


class ConvPatch(nn.Conv2d):
    """3×3 conv between images (B, C, H, W) and tokens (B, H, W, C') (Latent-PMRF's patch_conv)."""

    def __init__(self, in_channels: int, out_channels: int, to_tokens: bool):
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.to_tokens = to_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.to_tokens:
            return super().forward(x).permute(0, 2, 3, 1)
        return super().forward(x.permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------- model
class HDiT(nn.Module):
    """v_θ(x, t): x (B, C, H, W), t (B,) in [0, 1] -> velocity (B, C, H, W)."""

    def __init__(self, config: HDiTConfig):
        super().__init__()
        self.config = c = config
        widths = [lvl.width for lvl in c.levels]
        if c.patch_embed == "conv":
            self.patch_in = ConvPatch(c.in_channels, widths[0], to_tokens=True)
            self.patch_out = zero_init(ConvPatch(widths[0], c.out_channels, to_tokens=False))
        else:
            self.patch_in = TokenMerge(c.in_channels, widths[0], c.patch_size)
            self.patch_out = TokenSplit(widths[0], c.out_channels, c.patch_size, with_skip=False)
            zero_init(self.patch_out.proj)
        self.time_emb = FourierFeatures(1, c.mapping_width)
        self.time_in_proj = nn.Linear(c.mapping_width, c.mapping_width, bias=False)
        if c.aug_cond:
            self.aug_emb = FourierFeatures(AUG_COND_FEATURES, c.mapping_width)
            self.aug_in_proj = nn.Linear(c.mapping_width, c.mapping_width, bias=False)
        self.task_emb = TaskEmbedding(c.task_embedding, c.mapping_width) if c.task_embedding.tasks else None
        self.mapping = MappingNetwork(c.mapping_depth, c.mapping_width, c.mapping_d_ff or 3 * c.mapping_width)

        def level(lvl: HDiTLevelConfig) -> Level:
            return Level(TransformerLayer(lvl, c.mapping_width, c.attn_dwconv, c.ff_dwconv) for _ in range(lvl.depth))

        self.down_levels = nn.ModuleList(level(lvl) for lvl in c.levels[:-1])
        self.up_levels = nn.ModuleList(level(lvl) for lvl in c.levels[:-1])
        self.mid_level = level(c.levels[-1])
        self.merges = nn.ModuleList(TokenMerge(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.splits = nn.ModuleList(TokenSplit(b, a) for a, b in zip(widths[:-1], widths[1:]))
        self.out_norm = RMSNorm(widths[0])
        set_activation_checkpointing(self, c.activation_checkpointing)

    def forward(self, x: torch.Tensor, t: torch.Tensor, aug: torch.Tensor | None = None,
                task: torch.Tensor | int | None = None) -> torch.Tensor:
        """``aug`` (B, 9): k-diffusion's augmentation vector, only with ``config.aug_cond``; zeros
        when omitted, which is what PMRF always feeds. ``task``: task ids (one, or (B,)) of a
        multi-task net (``config.task_embedding.tasks``)."""
        m = self.config.multiple
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"HDiT expects (B, {self.config.in_channels}, H, W) with H, W multiples of {m}, "
                             f"got {tuple(x.shape)}")
        if self.config.patch_embed == "conv":
            x = self.patch_in(x)
        else:
            x = self.patch_in(x.permute(0, 2, 3, 1))
        pos = make_axial_pos(x.shape[1], x.shape[2], device=x.device)
        t = t.to(x.dtype).reshape(-1)
        mapping_in = self.time_in_proj(self.time_emb(t[:, None].float()).to(x.dtype))
        if self.config.aug_cond:
            if aug is None:
                aug = torch.zeros(x.shape[0], AUG_COND_FEATURES, device=x.device)
            elif aug.shape != (x.shape[0], AUG_COND_FEATURES):
                raise ValueError(f"aug must have shape ({x.shape[0]}, {AUG_COND_FEATURES}), got {tuple(aug.shape)}")
            mapping_in = mapping_in + self.aug_in_proj(self.aug_emb(aug.float()).to(x.dtype))
        elif aug is not None:
            raise ValueError("this HDiT has no augmentation conditioning (config.aug_cond is False) but got aug")
        task_in = task_vectors(self.task_emb, task, x.shape[0])
        if task_in is not None:
            mapping_in = mapping_in + task_in.to(mapping_in.dtype)
        cond = self.mapping(mapping_in)

        skips, poses = [], []
        for down, merge in zip(self.down_levels, self.merges):
            x = down(x, pos, cond)
            skips.append(x)
            poses.append(pos)
            x = merge(x)
            pos = downscale_pos(pos)
        x = self.mid_level(x, pos, cond)
        for up, split, skip, pos in reversed(list(zip(self.up_levels, self.splits, skips, poses))):
            x = up(split(x, skip), pos, cond)
        x = self.patch_out(self.out_norm(x))
        return x if self.config.patch_embed == "conv" else x.permute(0, 3, 1, 2)
