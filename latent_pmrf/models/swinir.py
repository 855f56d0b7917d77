"""SwinIR posterior-mean estimator: the frozen f_phi of PMRF / Latent-PMRF (paper Fig. 2, x* = E[X|Y=y]).

The network is SwinIR (Liang et al., 2021) in the variant DifFace trained for 512x512 blind face
restoration and released as ``swinir_restoration512_L1.pth``, the checkpoint PMRF uses as its MMSE
model (PMRF ``arch="swinir_L"``). Compared with the classic SwinIR it

* starts with a pixel-unshuffle by ``scale`` (8): a 512x512 face becomes a 64x64 grid of
  3*8*8 = 192-channel tokens, and
* ends with the "nearest+conv" reconstruction: log2(``scale``) rounds of nearest x2 + 3x3 conv, so
  the output has the input's size.

Shapes for the released config (embed 180, 8 stages of 6 blocks, 6 heads, window 8, MLP ratio 2)::

    (B, 3, 512, 512) -unshuffle-> (B, 192, 64, 64) -conv_first-> (B, 180, 64, 64)
    -> 8 residual Swin stages on (B, 64, 64, 180) tokens -> conv_after_body (+ skip)
    -> conv_before_upsample (B, 64, 64, 64) -> 3 x (nearest x2, conv) -> conv_hr, conv_last (B, 3, 512, 512)

Value range. ``SwinIR.forward`` takes and returns images in [-1, 1], the project's convention. The
checkpoint itself works on [0, 1] images with the DIV2K mean subtracted (``img_range`` 1): DifFace
trains it on [0, 1] pairs (``configs/training/swinir_ffhq512.yaml``: mean 0, std 1) and feeds it
[0, 1] images (``sampler.py``), and PMRF feeds ``to_tensor`` images and clips the output to [0, 1].
The conversion happens inside ``forward``; the output is not clamped.

Module and buffer names equal the official ones, so the released state dict (which holds every
``relative_position_index`` and the shifted blocks' ``attn_mask``, both persistent buffers in the
official code) loads with ``strict=True``. Window attention runs through
``F.scaled_dot_product_attention`` with the relative position bias (and the shifted-window mask) as
its additive mask, which equals the classic softmax(QK^T * scale + bias + mask) V.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..weights import require
from .state_dict import load_strict

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # subtracted from [0, 1] inputs by every SwinIR checkpoint
MASKED_LOGIT = -100.0  # the official shifted-window mask value (not -inf)


@dataclass
class SwinIRConfig:
    """Architecture of a SwinIR estimator. Defaults are DifFace's released ``swinir_difface512``."""

    in_channels: int = 3
    out_channels: int = 3
    embed_dim: int = 180
    depths: list[int] = field(default_factory=lambda: [6] * 8)  # Swin blocks per residual stage (RSTB)
    num_heads: list[int] = field(default_factory=lambda: [6] * 8)
    window_size: int = 8
    mlp_ratio: float = 2.0
    # Pixel-unshuffle factor at the input = total nearest-upsampling factor at the output.
    scale: int = 8
    # Side of the token grid (input side / scale) the stored shifted-window masks are built for:
    # 64 = 512 / 8 in the release. Other input sizes work; their masks are computed on the fly.
    img_size: int = 64
    upsample_channels: int = 64  # "num_feat" of the nearest+conv reconstruction
    image_mean: list[float] = field(default_factory=lambda: list(DIV2K_RGB_MEAN))  # on [0, 1] images
    img_range: float = 1.0
    drop_path_rate: float = 0.1  # stochastic depth while training, linear over all blocks (official)
    # Global residual: output = LQ + network, the form SwinIR's own same-size restorers use (its
    # denoising and JPEG models add the input back), with conv_last zero-initialised so that
    # training starts from f(y) = y. Off in DifFace's release (and so in PMRF's and the paper's
    # estimator); the quickstart turns it on, where a few hundred CPU steps would otherwise leave
    # f(y) below its own input's PSNR.
    input_residual: bool = False

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "embed_dim", "window_size", "upsample_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"SwinIRConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.depths or len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"SwinIRConfig.depths and num_heads must be non-empty and of equal length, "
                f"got {self.depths} and {self.num_heads}"
            )
        if any(d < 1 for d in self.depths):
            raise ValueError(f"SwinIRConfig.depths must all be >= 1, got {self.depths}")
        bad = [h for h in self.num_heads if h < 1 or self.embed_dim % h]
        if bad:
            raise ValueError(f"SwinIRConfig.num_heads must divide embed_dim={self.embed_dim}; got {bad}")
        if self.scale < 2 or self.scale & (self.scale - 1):
            raise ValueError(f"SwinIRConfig.scale must be a power of two >= 2, got {self.scale}")
        if self.window_size < 2:
            raise ValueError(f"SwinIRConfig.window_size must be >= 2 (odd blocks shift by half a window), got {self.window_size}")
        # The official model silently shrinks the window and drops the shift when img_size <= window.
        if self.img_size <= self.window_size or self.img_size % self.window_size:
            raise ValueError(
                f"SwinIRConfig.img_size must be a multiple of window_size={self.window_size} and larger "
                f"than it, got {self.img_size}"
            )
        if len(self.image_mean) not in (1, self.in_channels) or len(self.image_mean) not in (1, self.out_channels):
            raise ValueError(
                f"SwinIRConfig.image_mean needs 1 value or one per channel (in {self.in_channels}, "
                f"out {self.out_channels}), got {self.image_mean}"
            )
        if self.mlp_ratio <= 0 or self.img_range <= 0:
            raise ValueError(f"SwinIRConfig.mlp_ratio and img_range must be > 0, got {self.mlp_ratio}, {self.img_range}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"SwinIRConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def size_multiple(self) -> int:
        """Input sides are padded up to a multiple of this (unshuffle x whole windows)."""
        return self.scale * self.window_size

    @classmethod
    def preset(cls, name: str, **overrides) -> "SwinIRConfig":
        if name not in SWINIR_PRESETS:
            raise KeyError(f"unknown SwinIR preset {name!r}; choose from {sorted(SWINIR_PRESETS)}")
        return dataclasses.replace(SWINIR_PRESETS[name], **overrides)


SWINIR_PRESETS: dict[str, SwinIRConfig] = {
    # DifFace configs/sample/iddpm_ffhq512_swinir.yaml `model_ir` = PMRF create_arch("swinir_L"):
    # the released swinir_restoration512_L1.pth, 15,792,587 parameters.
    "swinir_difface512": SwinIRConfig(),
    # PMRF create_arch("swinir_M"): the MMSE model of PMRF's controlled experiments (256x256 faces).
    "swinir_pmrf_m": SwinIRConfig(embed_dim=120, depths=[6] * 5, num_heads=[6] * 5),
}


# ---------------------------------------------------------------------------- helpers
def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


def init_normal(weight: torch.Tensor) -> torch.Tensor:
    """The official ``trunc_normal_(std=0.02)``: its bounds are +-2, i.e. 100 std, so a plain normal
    draw is the same distribution for all practical purposes (and far faster on CPU)."""
    with torch.no_grad():
        return weight.normal_(0.0, 0.02)


def relative_position_index(window_size: int) -> torch.Tensor:
    """(N, N) index into the ((2w-1)^2, heads) bias table for token pairs of one w x w window."""
    rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, N)
    delta = coords[:, :, None] - coords[:, None, :] + (window_size - 1)  # (2, N, N), in [0, 2w-2]
    return delta[0] * (2 * window_size - 1) + delta[1]


def shifted_window_mask(height: int, width: int, window_size: int, shift: int) -> torch.Tensor:
    """(nW, N, N) additive mask for attention in windows of a grid rolled by -shift: pairs of tokens
    that came from different regions of the unrolled grid (wrapped around) get ``MASKED_LOGIT``."""

    def region(length: int) -> torch.Tensor:  # 0: untouched, 1: last window before wrap, 2: wrapped
        pos = torch.arange(length)
        return (pos >= length - window_size).long() + (pos >= length - shift).long()

    labels = region(height)[:, None] * 3 + region(width)[None, :]  # (H, W)
    labels = rearrange(labels, "(nh wh) (nw ww) -> (nh nw) (wh ww)", wh=window_size, ww=window_size)
    different = labels[:, :, None] != labels[:, None, :]
    return torch.zeros(different.shape).masked_fill(different, MASKED_LOGIT)


# ---------------------------------------------------------------------------- blocks
class WindowAttention(nn.Module):
    """Multi-head self-attention inside w x w windows with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.window_size, self.num_heads = window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(init_normal(torch.empty((2 * window_size - 1) ** 2, num_heads)))
        self.register_buffer("relative_position_index", relative_position_index(window_size))  # in the checkpoint
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self) -> torch.Tensor:
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]  # (N*N, heads)
        return rearrange(bias, "(i j) h -> h i j", i=n, j=n)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, nW, N, C) tokens of nW windows; mask: (nW, N, N) additive, or None."""
        num_windows = x.shape[1]
        # Windows are folded into the head axis so the bias is one (nW*heads, N, N) mask broadcast over B.
        q, k, v = rearrange(self.qkv(x), "b w n (three h d) -> three b (w h) n d", three=3, h=self.num_heads)
        bias = self.relative_position_bias()  # (heads, N, N)
        if mask is None:
            bias = bias.repeat(num_windows, 1, 1)
        else:
            bias = (mask[:, None] + bias[None]).flatten(0, 1)  # (nW*heads, N, N)
        # softmax(q k^T * scale + bias + mask) v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        return self.proj(rearrange(out, "b (w h) n d -> b w n (h d)", w=num_windows))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """Pre-norm (shifted-)window attention + MLP on (B, H, W, C) tokens."""

    def __init__(self, cfg: SwinIRConfig, num_heads: int, shift: int, drop_path_rate: float):
        super().__init__()
        dim, self.window_size, self.shift, self.drop_path_rate = cfg.embed_dim, cfg.window_size, shift, drop_path_rate
        self.stored_grid = (cfg.img_size, cfg.img_size)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, cfg.window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        if shift:  # the official model stores the mask for its img_size grid in the checkpoint
            self.register_buffer("attn_mask", shifted_window_mask(cfg.img_size, cfg.img_size, cfg.window_size, shift))

    def window_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        if not self.shift:
            return None
        if (height, width) == self.stored_grid:
            return self.attn_mask
        return shifted_window_mask(height, width, self.window_size, self.shift).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width, w = x.shape[1], x.shape[2], self.window_size
        h = self.norm1(x)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = rearrange(h, "b (nh wh) (nw ww) c -> b (nh nw) (wh ww) c", wh=w, ww=w)  # (B, nW, N, C)
        windows = self.attn(windows, self.window_mask(height, width, x.device))
        h = rearrange(windows, "b (nh nw) (wh ww) c -> b (nh wh) (nw ww) c", nh=height // w, wh=w)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + drop_path(h, self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class SwinLayer(nn.Module):
    """``depth`` Swin blocks, the odd ones shifted by half a window ("BasicLayer" officially)."""

    def __init__(self, cfg: SwinIRConfig, depth: int, num_heads: int, drop_path_rates: list[float]):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(cfg, num_heads, cfg.window_size // 2 if i % 2 else 0, drop_path_rates[i])
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer Block: x + conv3x3(SwinLayer(x)), tokens (B, H, W, C)."""

    def __init__(self, cfg: SwinIRConfig, depth: int, num_heads: int, drop_path_rates: list[float]):
        super().__init__()
        self.residual_group = SwinLayer(cfg, depth, num_heads, drop_path_rates)
        self.conv = nn.Conv2d(cfg.embed_dim, cfg.embed_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.residual_group(x).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        return x + self.conv(h).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """(B, C, H, W) feature map -> (B, H, W, C) tokens, layer-normed (patch size 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1))


# ---------------------------------------------------------------------------- model
class SwinIR(nn.Module):
    """``forward(lq)``: (B, C, H, W) LQ image in [-1, 1] -> posterior-mean estimate, same shape, in
    about [-1, 1] (unclamped; PMRF clamps it). Any H, W: the input is reflect-padded up to a
    multiple of ``scale * window_size`` (64 for the release) and the output cropped back. DifFace
    itself resizes every face to 512x512 first, the only size the checkpoint was trained on."""

    def __init__(self, config: SwinIRConfig | None = None):
        super().__init__()
        self.config = config or SwinIRConfig()
        cfg = self.config
        dim = cfg.embed_dim
        mean = torch.tensor(cfg.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("image_mean", mean, persistent=False)  # not in the checkpoint

        # 1. shallow features: (B, C, H, W) -> (B, C*s*s, H/s, W/s) -> (B, dim, H/s, W/s)
        self.conv_first = nn.Sequential(
            nn.PixelUnshuffle(cfg.scale), nn.Conv2d(cfg.in_channels * cfg.scale**2, dim, 3, padding=1)
        )
        # 2. deep features: residual Swin stages on tokens
        self.patch_embed = PatchEmbed(dim)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            RSTB(cfg, depth, heads, rates[start : start + depth])
            for depth, heads, start in zip(cfg.depths, cfg.num_heads, starts)
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        # 3. reconstruction ("nearest+conv"): log2(scale) x (nearest x2, conv3x3, LeakyReLU 0.2)
        feat = cfg.upsample_channels
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, feat, 3, padding=1), nn.LeakyReLU())  # slope 0.01
        self.upsample_names = [f"conv_up{i + 1}" for i in range(int(math.log2(cfg.scale)))]
        for name in self.upsample_names:
            self.add_module(name, nn.Conv2d(feat, feat, 3, padding=1))
        self.conv_hr = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_last = nn.Conv2d(feat, cfg.out_channels, 3, padding=1)
        self.apply(self._init_weights)
        if cfg.input_residual:
            if cfg.in_channels != cfg.out_channels:
                raise ValueError(f"SwinIRConfig.input_residual needs in_channels == out_channels, got "
                                 f"{cfg.in_channels} and {cfg.out_channels}")
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """The official initialisation: N(0, 0.02) Linear weights, zero biases, unit LayerNorms."""
        if isinstance(module, nn.Linear):
            init_normal(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)  # (B, dim, h, w) -> (B, h, w, dim)
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens).permute(0, 3, 1, 2)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if lq.ndim != 4 or lq.shape[1] != cfg.in_channels:
            raise ValueError(f"SwinIR expects images of shape (B, {cfg.in_channels}, H, W), got {tuple(lq.shape)}")
        height, width = lq.shape[-2:]
        x = ((lq + 1) / 2 - self.image_mean) * cfg.img_range  # [-1, 1] -> the checkpoint's [0, 1] - mean
        x = pad_to_multiple(x, cfg.size_multiple)

        feat = self.conv_first(x)
        feat = feat + self.conv_after_body(self.forward_features(feat))
        h = self.conv_before_upsample(feat)
        for name in self.upsample_names:
            h = F.leaky_relu(getattr(self, name)(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(h), 0.2))

        out = out[..., :height, :width] / cfg.img_range
        if cfg.input_residual:
            return lq + out * 2  # the residual, scaled from [0, 1] units to [-1, 1] units
        return (out + self.image_mean) * 2 - 1  # [0, 1] -> [-1, 1]

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, config: SwinIRConfig | None = None) -> "SwinIR":
        """DifFace's released estimator (or ``path``), keys matched strictly; see ``load_swinir_checkpoint``."""
        return load_swinir_checkpoint(path, config)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of (B, C, H, W) to multiples of ``multiple``: reflect (as the official
    ``check_image_size``), or replicate where the image is too small to reflect that far."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


# ---------------------------------------------------------------------------- checkpoint files
def swinir_checkpoint_path(path: str | Path | None = None) -> Path:
    """``path`` if given, else ``$TORCH_HOME/hub/checkpoints/swinir_restoration512_L1.pth``; a clear
    error naming the file, the folder searched and the download address when it is absent."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SwinIR checkpoint {str(path)!r} does not exist (looked in {path.parent.resolve()}).")
        return path
    return require("swinir_difface", "The SwinIR posterior-mean estimator (PMRF's MMSE model; or pass the file's path)")


def read_swinir_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict inside a SwinIR checkpoint file. DifFace's trainer saves
    ``{"iters_start", "log_step", "log_step_img", "state_dict": DDP-model.state_dict()}`` (keys
    prefixed ``module.``); BasicSR-style files use ``params_ema`` / ``params``; a bare state dict is
    accepted too."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} is not a plain tensor checkpoint torch.load(weights_only=True) can read: {err}") from err
    if not isinstance(ckpt, Mapping):
        raise TypeError(f"{path} holds a {type(ckpt).__name__}, not a state dict")
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(ckpt.get(wrapper), Mapping):
            ckpt = ckpt[wrapper]
            break
    non_tensors = sorted(k for k, v in ckpt.items() if not isinstance(v, torch.Tensor))
    if non_tensors:
        raise ValueError(f"{path}: no state dict found (entries that are not tensors: {non_tensors[:10]})")
    if ckpt and all(k.startswith("module.") for k in ckpt):  # saved from a DistributedDataParallel model
        ckpt = {k.removeprefix("module."): v for k, v in ckpt.items()}
    return dict(ckpt)


def load_swinir_checkpoint(path: str | Path | None = None, config: SwinIRConfig | None = None) -> SwinIR:
    """A ``SwinIR(config)`` (default: ``swinir_difface512``) with the weights of ``path`` (default:
    DifFace's ``swinir_restoration512_L1.pth`` from the torch hub cache), in eval mode. Keys and
    shapes must match exactly; the error lists what is missing, unexpected or mis-shaped."""
    path = swinir_checkpoint_path(path)
    model = SwinIR(config or SwinIRConfig.preset("swinir_difface512"))
    return load_strict(model, read_swinir_state_dict(path), f"SwinIR checkpoint {path}",
                       f"The model was built from {model.config}.").eval()
