"""The official Latent-PMRF velocity network (``LooUFormer``), re-implemented as a pure module.

Paper Sec. 4.1: "adopt HDiT as the velocity model ... patch size 1, transformer blocks arranged as
2, 4 and 6 from high- to low-resolution, depth-wise convolutions in both the attention and
feed-forward layers"; Table 4: 151.2 M trainable parameters. The official run
(``..._looformer_plain_2n_4n_6g_dwconv_patch_conv_p1_std0dot1_our_vae_ema_f8c32_nona``) builds the
authors' ``LooUFormer``, an HDiT-shaped U-Net on (B, C, H, W) maps. Where it differs from our
k-diffusion-style ``hdit.HDiT``:

* plain scaled-dot-product attention (logits · d_head^-1/2), not cosine similarity with a learned
  scale; neighbourhood attention (k×k, NATTEN semantics) at "n" levels, global at the "g" level;
  axial RoPE on half of each head's dimensions, as HDiT;
* 1×1 conv projections followed by a depthwise 3×3 conv (qkv and the feed-forward input); the 1×1
  conv has no bias when the depthwise conv (which has one) follows it;
* feed-forward GELU(a)·b with a the first half of the projection, hidden width
  ``mult·width`` rounded to the nearest multiple of 64;
* AdaRMSNorm over channels whose scale is 1 + Linear(cond) with a bias (zero-initialised);
* resizers are convs: 3×3 stride-2 conv down, nearest ×2 + 3×3 conv up, merged with the skip by
  lerp(skip, up, fac), fac learned (init 0.5);
* 3×3 conv patch embedding in and out, biases everywhere, and no zero-init of output layers by
  default; the final RMSNorm has an affine weight and eps = the dtype's machine epsilon;
* time: Gaussian Fourier features (std 1) of σ -> Linear (no bias) -> HDiT mapping network, whose
  hidden width is also rounded to a multiple of 64.

Time convention. The official pipeline (``pipeline_fm.py``) calls the net with
``sigma = timestep / 1000`` where the scheduler's timestep is σ·1000, so the net sees σ ∈ [0, 1];
its scheduler trains on x_σ = σ·source + (1 - σ)·clean with target source - clean and samples
from σ = 1 (source) down to σ = 0 (clean). Ours (``flow.rectified_flow``) is x_t = t·clean +
(1 - t)·source with target clean - source. Hence σ = 1 - t and v_ours = -v_official:
``forward(x, t) = -forward_official(x, 1 - t)``, so a model trained with our loss matches the
official one exactly, and official weights would plug in without touching the sampler.

Config defaults are the official ``__init__`` defaults (time conditioning off unless
``time_embed_dim`` is set). Preset ``latent_pmrf_official`` (Sim-VAE f8c32: 32-channel 64² latents
of 512² faces). Published (Sec. 4.1, run name): 32 channels in/out, patch 1 with conv patch
embedding, depths 2/4/6 with NA/NA/global, depthwise convs. Official defaults kept: conv down,
interpolate up, 3×3 resizer kernels, biases, no zero-init, Fourier std 1 on linear σ, 2 mapping
layers. Inferred (not published):

* d_head 64 and NA kernel 7, from PMRF's HDiT, which the paper follows (neither changes the count);
* widths 256/512/768, feed-forward ratio 4, time/mapping width 1024 (= 4 × the first width, the
  ADM/SD convention), mapping ratio 4: 151,209,506 trainable parameters (Table 4: 151.2 M; the
  official module also lists its 512 fixed Fourier frequencies as a frozen ``nn.Parameter``,
  151,210,018 in all). This is a fit, not a recovered config. The official ratios (3) with PMRF's
  widths 256/512/1024 and mapping width 768 give 153.98 M; with ratios 3 and mapping width 768 the
  only widths in multiples of 64 within 151.2 ± 0.05 M are 128/192/1216. Over width families
  (w,2w,4w), (w,2w,2w), (w,2w,3w), (w,w,w), mapping widths 256-1280, ratios {2, 8/3, 3, 4} and 1-4
  mapping layers, 256/512/768 with ratio 4 and mapping width 1024 is the one round-number fit.

Left out: the official ``mapping_dropout`` (0 by default) and its unused ``scale``/``cond``
arguments. For porting weights: our Fourier frequencies are a (D/2, 1) buffer (theirs a (D/2,)
frozen parameter) and the RoPE frequencies are recomputed, not stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import neighborhood_attention
from .checkpointing import Level, set_activation_checkpointing
from .hdit import (
    AxialRoPE,
    FourierFeatures,
    MappingNetwork,
    apply_rotary,
    downscale_pos,
    make_axial_pos,
    zero_init,
)
from .task_embedding import TaskEmbedding, TaskEmbeddingConfig, task_vectors

DOWNSAMPLE_METHODS = ("conv", "pixel_unshuffle+conv", "conv+pixel_unshuffle")
UPSAMPLE_METHODS = ("interpolate", "pixel_shuffle")
PATCH_EMBEDS = ("conv", "pixel_shuffle")


# ---------------------------------------------------------------------------------------- config
@dataclass
class LooUFormerLevelConfig:
    depth: int  # transformer blocks on the way down (and again on the way up); the last level's are the middle
    width: int
    attention: str = "neighborhood"  # "neighborhood" | "global"
    head_dim: int = 64
    kernel_size: int = 7  # neighbourhood size (NA levels only)


@dataclass
class LooUFormerConfig:
    in_channels: int = 32
    out_channels: int = 32
    levels: list[LooUFormerLevelConfig] = field(default_factory=list)  # high -> low resolution
    patch_embed: str = "conv"  # "conv": 3×3 conv in/out (patch 1) | "pixel_shuffle": p×p patches, 1×1 conv
    patch_size: int = 1
    dwconv: bool = True  # depthwise 3×3 conv after the qkv and feed-forward input projections (Sec. 4.1)
    use_bias: bool = True
    zero_init_last_layer: bool = False  # zero-init attention/feed-forward outputs and the output projection
    mult: float = 3.0  # feed-forward hidden width = mult·width, rounded to a multiple of 64
    downsample_method: str = "conv"
    downsample_kernel_size: int = 3
    upsample_method: str = "interpolate"
    upsample_kernel_size: int = 3
    time_embed_dim: int | None = None  # official default None: no time conditioning (RMSNorms with a weight)
    time_embed_log_space: bool = False  # Fourier features of log σ instead of σ
    time_embed_freq_scale: float = 1.0  # std of the Fourier frequencies
    mapping_layers: int = 2
    mapping_mult: float = 3.0
    activation_checkpointing: bool = False  # recompute block activations in backward (models/checkpointing.py)
    family: str = "looformer"  # velocity-model family (models/velocity.py); fixed for this class
    # GenSIRR's learnable task embedding, added to the mapping input (models/task_embedding.py)
    task_embedding: TaskEmbeddingConfig = field(default_factory=TaskEmbeddingConfig)

    def __post_init__(self) -> None:
        if self.family != "looformer":
            raise ValueError(f"LooUFormerConfig.family is 'looformer', got {self.family!r}: choose another "
                             "family's model with model.preset (e.g. hdit_latent_pmrf)")
        self.levels = [lvl if isinstance(lvl, LooUFormerLevelConfig) else LooUFormerLevelConfig(**lvl)
                       for lvl in self.levels]
        if isinstance(self.task_embedding, dict):
            self.task_embedding = TaskEmbeddingConfig(**self.task_embedding)
        if self.task_embedding.tasks and self.time_embed_dim is None:
            raise ValueError("task_embedding needs the mapping network: set time_embed_dim")
        if not self.levels:
            raise ValueError("LooUFormerConfig.levels is empty")
        for i, lvl in enumerate(self.levels):
            if lvl.attention not in ("neighborhood", "global"):
                raise ValueError(f"levels[{i}].attention must be 'neighborhood' or 'global', got {lvl.attention!r}")
            if lvl.width % lvl.head_dim:
                raise ValueError(f"levels[{i}].width {lvl.width} is not a multiple of head_dim {lvl.head_dim}")
            if lvl.head_dim % 8:
                raise ValueError(f"levels[{i}].head_dim must be a multiple of 8 (axial RoPE), got {lvl.head_dim}")
            if lvl.attention == "neighborhood" and lvl.kernel_size % 2 == 0:
                raise ValueError(f"levels[{i}].kernel_size must be odd, got {lvl.kernel_size}")
        for name, value, allowed in (("patch_embed", self.patch_embed, PATCH_EMBEDS),
                                     ("downsample_method", self.downsample_method, DOWNSAMPLE_METHODS),
                                     ("upsample_method", self.upsample_method, UPSAMPLE_METHODS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.patch_embed == "conv" and self.patch_size != 1:
            raise ValueError("patch_embed='conv' works on patch_size=1")
        if self.downsample_method == "conv" and self.downsample_kernel_size != 3:
            raise ValueError("downsample_method='conv' is a 3×3 stride-2 conv: downsample_kernel_size must be 3")
        if self.time_embed_dim is not None and self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be even (cos and sin features), got {self.time_embed_dim}")

    @property
    def multiple(self) -> int:
        """Inputs must have H and W divisible by this."""
        return self.patch_size * 2 ** (len(self.levels) - 1)

    @classmethod
    def preset(cls, name: str, **overrides) -> LooUFormerConfig:
        if name not in LOOUFORMER_PRESETS:
            raise KeyError(f"unknown LooUFormer preset {name!r}; available: {sorted(LOOUFORMER_PRESETS)}")
        values = {**LOOUFORMER_PRESETS[name], **overrides}
        values["levels"] = [dict(lvl) for lvl in values["levels"]]
        return cls(**values)


LOOUFORMER_PRESETS: dict[str, dict] = {
    # Sec. 4.1 / Table 4 (151.2 M): 64² latents of Sim-VAE f8c32, patch 1, depths 2/4/6 (NA, NA,
    # global), depthwise convs. Widths, ratios and mapping width inferred (module docstring).
    "latent_pmrf_official": dict(
        in_channels=32, out_channels=32, patch_embed="conv", patch_size=1, dwconv=True,
        mult=4.0, time_embed_dim=1024, mapping_layers=2, mapping_mult=4.0,
        levels=[dict(depth=2, width=256, attention="neighborhood", head_dim=64, kernel_size=7),
                dict(depth=4, width=512, attention="neighborhood", head_dim=64, kernel_size=7),
                dict(depth=6, width=768, attention="global", head_dim=64)]),
}


# ---------------------------------------------------------------------------------------- pieces
def round_to_64(x: float) -> int:
    """int(x) rounded to the nearest multiple of 64 (exact halves down): the official hidden widths."""
    return 64 * ((int(x) + 31) // 64)


def channel_rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float | None) -> torch.Tensor:
    """(B, C, H, W) / sqrt(mean_C(x²) + eps) [· weight], in at least float32; eps None: the machine
    epsilon of x's dtype (torch.nn.RMSNorm's default, used by the official output norm)."""
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    dtype = torch.promote_types(x.dtype, torch.float32)
    x_ = x.to(dtype)
    out = x_ * torch.rsqrt(x_.pow(2).mean(dim=1, keepdim=True) + eps)
    if weight is not None:
        out = out * weight.to(dtype)[:, None, None]
    return out.to(x.dtype)


class RMSNorm2d(nn.Module):
    """RMSNorm over channels with a learned weight; eps None: the dtype's machine epsilon."""

    def __init__(self, channels: int, eps: float | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_rms_norm(x, self.weight, self.eps)


class AdaRMSNorm2d(nn.Module):
    """RMSNorm over channels (eps 1e-6) scaled by 1 + Linear(cond) (zero-init, with bias); without a
    cond width, a plain RMSNorm with a learned weight."""

    def __init__(self, channels: int, cond_features: int | None, bias: bool):
        super().__init__()
        if cond_features is None:
            self.linear, self.weight = None, nn.Parameter(torch.ones(channels))
        else:
            self.linear, self.weight = zero_init(nn.Linear(cond_features, channels, bias=bias)), None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.linear is None:
            return channel_rms_norm(x, self.weight, 1e-6)
        return channel_rms_norm(x, None, 1e-6) * (1 + self.linear(cond))[:, :, None, None].to(x.dtype)


class ConvProjection(nn.Module):
    """1×1 conv, then (``dwconv``) a depthwise 3×3 conv; the 1×1 conv has a bias only without it."""

    def __init__(self, in_channels: int, out_channels: int, dwconv: bool, bias: bool):
        super().__init__()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias and not dwconv)
        self.depthwise = (nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels, bias=bias)
                          if dwconv else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pointwise(x)
        return x if self.depthwise is None else self.depthwise(x)


class Attention(nn.Module):
    """Multi-head attention with axial RoPE: global (``kernel_size`` None) or k×k neighbourhood."""

    def __init__(self, width: int, head_dim: int, kernel_size: int | None, dwconv: bool, bias: bool,
                 zero_init_out: bool):
        super().__init__()
        self.head_dim, self.n_heads, self.kernel_size = head_dim, width // head_dim, kernel_size
        self.qkv_proj = ConvProjection(width, 3 * width, dwconv, bias)
        self.rope = AxialRoPE(head_dim, self.n_heads)  # d_head/8 frequencies per axis: half the dims rotate
        self.out_proj = nn.Conv2d(width, width, 1, bias=bias)
        if zero_init_out:
            zero_init(self.out_proj)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # (B, 3C, H, W) -> 3 × (B, H, W, heads, d_head)
        q, k, v = rearrange(self.qkv_proj(x), "b (t nh e) h w -> t b h w nh e", t=3, e=self.head_dim)
        theta = self.rope(pos.float())  # (H, W, heads, d_head/4)
        q, k = apply_rotary(q, theta), apply_rotary(k, theta)
        if self.kernel_size is not None:
            out = neighborhood_attention(q, k, v, self.kernel_size)  # logits · d_head^-1/2
        else:
            q, k, v = (rearrange(t, "b h w nh e -> b nh (h w) e") for t in (q, k, v))
            out = rearrange(F.scaled_dot_product_attention(q, k, v), "b nh (h w) e -> b h w nh e", h=h, w=w)
        return self.out_proj(rearrange(out, "b h w nh e -> b (nh e) h w"))


class FeedForward(nn.Module):
    """GELU-gated feed-forward: [a, b] = proj(x), out = down(GELU(a)·b)."""

    def __init__(self, width: int, mult: float, dwconv: bool, bias: bool, zero_init_out: bool):
        super().__init__()
        hidden = round_to_64(width * mult)
        self.up_proj = ConvProjection(width, 2 * hidden, dwconv, bias)
        self.down_proj = nn.Conv2d(hidden, width, 1, bias=bias)
        if zero_init_out:
            zero_init(self.down_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.up_proj(x).chunk(2, dim=1)
        return self.down_proj(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    def __init__(self, lvl: LooUFormerLevelConfig, c: LooUFormerConfig):
        super().__init__()
        kernel_size = lvl.kernel_size if lvl.attention == "neighborhood" else None
        self.attn_norm = AdaRMSNorm2d(lvl.width, c.time_embed_dim, c.use_bias)
        self.attn = Attention(lvl.width, lvl.head_dim, kernel_size, c.dwconv, c.use_bias, c.zero_init_last_layer)
        self.ff_norm = AdaRMSNorm2d(lvl.width, c.time_embed_dim, c.use_bias)
        self.ff = FeedForward(lvl.width, c.mult, c.dwconv, c.use_bias, c.zero_init_last_layer)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x, cond), pos)
        return x + self.ff(self.ff_norm(x, cond))


class Downsample(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int, method: str, kernel_size: int, bias: bool):
        super().__init__()
        pad = kernel_size // 2
        if method == "conv":
            self.body = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=bias)
        elif method == "pixel_unshuffle+conv":
            self.body = nn.Sequential(nn.PixelUnshuffle(2),
                                      nn.Conv2d(4 * in_channels, out_channels, kernel_size, padding=pad, bias=bias))
        else:  # "conv+pixel_unshuffle"
            self.body = nn.Sequential(nn.Conv2d(in_channels, out_channels // 4, kernel_size, padding=pad, bias=bias),
                                      nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, 2H, 2W), then lerp(skip, up, fac) with fac learned (init 0.5)."""

    def __init__(self, in_channels: int, out_channels: int, method: str, kernel_size: int, bias: bool):
        super().__init__()
        self.method = method
        factor = 1 if method == "interpolate" else 4  # "pixel_shuffle" makes 4·C_out channels, then depth-to-space
        self.conv = nn.Conv2d(in_channels, factor * out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.fac = nn.Parameter(torch.full([1], 0.5))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.method == "interpolate":
            x = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        else:
            x = F.pixel_shuffle(self.conv(x), 2)
        return torch.lerp(skip.to(x.dtype), x, self.fac.to(x.dtype))


class PatchMerge(nn.Module):
    """(B, C, H, W) -> (B, C', H/p, W/p): each p×p patch's pixels stacked as (row, col, channel), 1×1 conv."""

    def __init__(self, in_channels: int, out_channels: int, patch: int, bias: bool):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_channels * patch * patch, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(rearrange(x, "b e (h nh) (w nw) -> b (nh nw e) h w", nh=self.patch, nw=self.patch))


class PatchSplit(nn.Module):
    """(B, C, H, W) -> (B, C', pH, pW): the inverse layout of PatchMerge. Always with a bias, as the
    official module (its ``use_bias`` does not reach this layer)."""

    def __init__(self, in_channels: int, out_channels: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_channels, out_channels * patch * patch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "b (nh nw e) h w -> b e (h nh) (w nw)", nh=self.patch, nw=self.patch)


# ---------------------------------------------------------------------------------------- model
class LooUFormer(nn.Module):
    """v_θ(x, t): x (B, C, H, W), t (B,) in [0, 1] with t = 0 the source and t = 1 clean -> velocity
    clean - source (B, C, H, W). ``forward_official(x, σ)`` is the official network itself."""

    def __init__(self, config: LooUFormerConfig):
        super().__init__()
        self.config = c = config
        widths = [lvl.width for lvl in c.levels]
        if c.time_embed_dim is not None:
            dim = c.time_embed_dim
            self.time_emb = FourierFeatures(1, dim, std=c.time_embed_freq_scale)  # [cos, sin](2π σ f)
            self.time_in_proj = nn.Linear(dim, dim, bias=False)
            self.mapping = MappingNetwork(c.mapping_layers, dim, round_to_64(dim * c.mapping_mult))
        self.task_emb = TaskEmbedding(c.task_embedding, c.time_embed_dim) if c.task_embedding.tasks else None
        if c.patch_embed == "conv":
            self.proj_in = nn.Conv2d(c.in_channels, widths[0], 3, padding=1, bias=c.use_bias)
            self.proj_out = nn.Conv2d(widths[0], c.out_channels, 3, padding=1, bias=c.use_bias)
        else:
            self.proj_in = PatchMerge(c.in_channels, widths[0], c.patch_size, c.use_bias)
            self.proj_out = PatchSplit(widths[0], c.out_channels, c.patch_size)
        if c.zero_init_last_layer:
            zero_init(self.proj_out if c.patch_embed == "conv" else self.proj_out.proj)

        def level(lvl: LooUFormerLevelConfig) -> Level:
            return Level(TransformerBlock(lvl, c) for _ in range(lvl.depth))

        self.down_levels = nn.ModuleList(level(lvl) for lvl in c.levels[:-1])
        self.up_levels = nn.ModuleList(level(lvl) for lvl in c.levels[:-1])
        self.mid_level = level(c.levels[-1])
        self.downsamples = nn.ModuleList(
            Downsample(a, b, c.downsample_method, c.downsample_kernel_size, c.use_bias)
            for a, b in pairwise(widths))
        self.upsamples = nn.ModuleList(
            Upsample(b, a, c.upsample_method, c.upsample_kernel_size, c.use_bias)
            for a, b in pairwise(widths))
        self.out_norm = RMSNorm2d(widths[0])  # eps: machine epsilon, as the official output norm
        set_activation_checkpointing(self, c.activation_checkpointing)

    def time_condition(self, sigma: torch.Tensor, task: torch.Tensor | int | None = None) -> torch.Tensor | None:
        """σ (B,) -> (B, time_embed_dim): Fourier features -> Linear (+ the task vector) -> mapping network."""
        if self.config.time_embed_dim is None:
            task_vectors(self.task_emb, task, sigma.numel())  # refuses task ids
            return None
        sigma = sigma.to(self.time_emb.weight.dtype).reshape(-1, 1)
        if self.config.time_embed_log_space:
            sigma = sigma.log()
        mapping_in = self.time_in_proj(self.time_emb(sigma))
        task_in = task_vectors(self.task_emb, task, sigma.shape[0])
        return self.mapping(mapping_in if task_in is None else mapping_in + task_in.to(mapping_in.dtype))

    def forward_official(self, x: torch.Tensor, sigma: torch.Tensor, task: torch.Tensor | int | None = None
                         ) -> torch.Tensor:
        """The official network: σ = 1 - t (1 at the source, 0 clean), returns source - clean."""
        c, m = self.config, self.config.multiple
        if x.ndim != 4 or x.shape[1] != c.in_channels or x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"LooUFormer expects (B, {c.in_channels}, H, W) with H, W multiples of {m}, "
                             f"got {tuple(x.shape)}")
        cond = self.time_condition(sigma, task)
        cond = None if cond is None else cond.to(x.dtype)
        x = self.proj_in(x)  # (B, C, H, W) -> (B, width_0, H/p, W/p)
        pos = make_axial_pos(x.shape[-2], x.shape[-1], device=x.device)  # (h, w, 2)

        skips, poses = [], []
        for down, downsample in zip(self.down_levels, self.downsamples):
            x = down(x, pos, cond)
            skips.append(x)
            poses.append(pos)
            x = downsample(x)  # (B, width_i, h, w) -> (B, width_i+1, h/2, w/2)
            pos = downscale_pos(pos)
        x = self.mid_level(x, pos, cond)
        for up, upsample, skip, pos in reversed(list(zip(self.up_levels, self.upsamples, skips, poses))):
            x = up(upsample(x, skip), pos, cond)  # (B, width_i+1, h/2, w/2) -> (B, width_i, h, w)
        return self.proj_out(self.out_norm(x))

    def forward(self, x: torch.Tensor, t: torch.Tensor, task: torch.Tensor | int | None = None) -> torch.Tensor:
        # Our x_t = t·clean + (1 - t)·source (Eq. 1) is the official x_σ at σ = 1 - t, and our target
        # clean - source is minus the official one (module docstring).
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        return -self.forward_official(x, 1 - t, task)
