"""2-D neighbourhood attention (NA) for the HDiT velocity model (paper Sec. 4.1; HDiT, Crowson et al.
2024, uses k×k NA at its high-resolution levels; NA: Hassani et al. 2023).

Semantics (NATTEN's, dilation 1, odd ``kernel_size`` k): the query at row i attends to the k rows
starting at ``clamp(i - k//2, 0, H - k)``, and likewise for columns. Away from the borders the window
is centred on the query; near a border it is shifted inwards, not truncated, so every query always
sees exactly k×k keys. Logits are scaled by ``scale`` (default D^-1/2) and softmax-normalised over
those k² keys.

Backends, all computing that same function on tensors laid out (B, H, W, heads, D):

* ``natten`` -- ``natten.functional.na2d`` (NATTEN >= 0.20); picked on CUDA when installed with
  its fused kernels (libnatten).
* ``torch``  -- ``_tiled_neighborhood_attention``: pure PyTorch with autograd, used on CPU or
  without NATTEN.
* ``brute_force_neighborhood_attention`` -- dense attention over all H·W keys with a boolean
  window mask: O((HW)²) memory, the reference that the tests and ``benchmarks/na_speed.py`` share.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

BACKENDS = ("auto", "natten", "torch")

# Queries are processed in QUERY_TILE × QUERY_TILE tiles (see _tiled_neighborhood_attention).
# Measured on the shared 2-core CPU (fp32, 64×64 tokens, 4 heads, D=64, batch 1, 2 threads, median
# of 4, fwd / fwd+bwd ms): tile 4: 17/64 (k=7), 84/201 (k=13); 6: 18/48, 43/125; 8: 16/43, 31/92;
# 12: 28/73, 44/125; 16: 26/70, 41/112. Small tiles pay per-tile overhead, large ones compute more
# masked logits. The other design, gathering each query's own k×k window (unfold + index, then
# einsum over k² keys), ran 2-10x slower than the brute-force reference: it copies K and V k²
# times (0.4 GB per 64×64 map at k=7).
QUERY_TILE = 8


def window_start(positions: torch.Tensor, size: int, kernel_size: int) -> torch.Tensor:
    """First row (or column) of the k-wide window of each query position along one axis of length
    ``size``: centred when it fits, shifted inside the map at the borders (NATTEN, dilation 1)."""
    return (positions - kernel_size // 2).clamp(0, size - kernel_size)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int) -> None:
    if q.dim() != 5:
        raise ValueError(f"expected q, k, v of shape (B, H, W, heads, D), got q of shape {tuple(q.shape)}")
    if k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"q, k must have the same shape and v the same (B, H, W, heads): "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype and q.device == k.device == v.device):
        raise ValueError(f"q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} "
                         f"on {q.device}/{k.device}/{v.device}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive int, got {kernel_size!r}")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the window is centred on its query), got {kernel_size}")
    height, width = q.shape[1:3]
    if kernel_size > min(height, width):
        raise ValueError(f"kernel_size {kernel_size} is larger than the {height}×{width} (H×W) token map")


def brute_force_neighborhood_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, scale: float | None = None
) -> torch.Tensor:
    """Reference NA: dense scaled-dot-product attention over all H·W keys, masked to each query's
    window. (B, H, W, heads, D) -> (B, H, W, heads, Dv). Its mask alone is (HW)²: tests/benchmarks only."""
    _check_inputs(q, k, v, kernel_size)
    height, width = q.shape[1:3]

    def in_window(size: int) -> torch.Tensor:  # (size queries, size keys) along one axis
        pos = torch.arange(size, device=q.device)
        start = window_start(pos, size, kernel_size)[:, None]
        return (pos[None, :] >= start) & (pos[None, :] < start + kernel_size)

    # allowed[(i, j), (i', j')] = i' in row window of i and j' in column window of j
    mask = rearrange(in_window(height)[:, None, :, None] & in_window(width)[None, :, None, :],
                     "i j ki kj -> (i j) (ki kj)")
    q, k, v = (rearrange(t, "b h w n d -> b n (h w) d") for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return rearrange(out, "b n (h w) d -> b h w n d", h=height, w=width)


def _tile_axis(n_tiles: int, size: int, kernel_size: int, halo: int, device: torch.device):
    """Along one axis: the ``halo`` key positions each query tile reads, (n_tiles, halo), and which
    of them lie in each of its QUERY_TILE queries' windows, (n_tiles, QUERY_TILE, halo) bool.

    The halo starts at clamp(first query - k//2, 0, size - halo) with halo = min(tile + k - 1, size);
    it contains every clamped window of the tile, including those of the padding queries past
    ``size`` (their windows clamp to the last k positions, and their outputs are dropped)."""
    starts = window_start(torch.arange(n_tiles * QUERY_TILE, device=device), size, kernel_size)
    starts = starts.view(n_tiles, QUERY_TILE, 1)
    halo_start = (torch.arange(n_tiles, device=device) * QUERY_TILE - kernel_size // 2).clamp(0, size - halo)
    keys = halo_start[:, None] + torch.arange(halo, device=device)  # (n_tiles, halo)
    allowed = (keys[:, None, :] >= starts) & (keys[:, None, :] < starts + kernel_size)
    return keys, allowed


@functools.lru_cache(maxsize=32)
def _tile_plan(height: int, width: int, kernel_size: int, device: torch.device, dtype: torch.dtype):
    """(halo_tokens, logit_bias) for _tiled_neighborhood_attention, cached: every NA layer of a
    level reuses them. halo_tokens: flat token index of each tile's halo, (th·tw·halo_h·halo_w,);
    logit_bias: 0 inside each query's window and -inf outside, (th·tw, 1, tile², halo_h·halo_w)."""
    with torch.inference_mode(False):  # cached tensors must stay usable by later autograd calls
        halo_h, halo_w = min(QUERY_TILE + kernel_size - 1, height), min(QUERY_TILE + kernel_size - 1, width)
        rows, rows_allowed = _tile_axis(-(-height // QUERY_TILE), height, kernel_size, halo_h, device)
        cols, cols_allowed = _tile_axis(-(-width // QUERY_TILE), width, kernel_size, halo_w, device)
        halo_tokens = (rows[:, None, :, None] * width + cols[None, :, None, :]).flatten()
        allowed = rearrange(rows_allowed[:, None, :, None, :, None] & cols_allowed[None, :, None, :, None, :],
                            "th tw ti tj hi hj -> (th tw) 1 (ti tj) (hi hj)")
        logit_bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))
    return halo_tokens, logit_bias


def _tiled_neighborhood_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, scale: float | None
) -> torch.Tensor:
    """Pure-PyTorch NA (forward and backward through autograd).

    The token map is cut into QUERY_TILE² query tiles (zero-padded up to a multiple of the tile).
    Each tile attends, with ``F.scaled_dot_product_attention`` and an additive mask, to the keys of
    its halo of (tile + k - 1)² positions, which holds all its queries' windows; the mask keeps each
    query's own k×k window. The dense per-tile problems run on SDPA's fused CPU/CUDA kernels (which
    take masks and never hold all logits); a tile does (tile + k - 1)²/k² times the minimal work
    (4x at k=7), traded for dense matmuls. Extra memory: the K and V halos, (tile + k - 1)²/tile²
    (3x at k=7) the size of K and V, and one HW × (tile + k - 1)² mask shared by batch and heads
    (3 MiB at 64×64, k=7), where the brute force needs an (HW)² mask (64 MiB as float).
    """
    batch, height, width = q.shape[:3]
    tile = QUERY_TILE
    tiles_h, tiles_w = -(-height // tile), -(-width // tile)
    # Under torch.compile the plan is traced (and folded into the graph) instead of cached.
    plan = _tile_plan.__wrapped__ if torch.compiler.is_compiling() else _tile_plan
    halo_tokens, logit_bias = plan(height, width, kernel_size, q.device, q.dtype)

    # Tiles are SDPA's batch and (B, heads) its heads, so one mask per tile broadcasts over both.
    def gather_halo(t: torch.Tensor) -> torch.Tensor:  # (B, H, W, n, d) -> (th·tw, B·n, halo², d)
        t = rearrange(t, "b h w n d -> (h w) (b n) d").index_select(0, halo_tokens)  # (th·tw·halo², B·n, d)
        return rearrange(t, "(t l) bn d -> t bn l d", t=tiles_h * tiles_w)  # a view: SDPA takes strides

    if (tiles_h * tile, tiles_w * tile) != (height, width):
        q = F.pad(q, (0, 0, 0, 0, 0, tiles_w * tile - width, 0, tiles_h * tile - height))
    q = rearrange(q, "b (th ti) (tw tj) n d -> (th tw) (b n) (ti tj) d", ti=tile, tj=tile)
    out = F.scaled_dot_product_attention(q, gather_halo(k), gather_halo(v), attn_mask=logit_bias, scale=scale)
    out = rearrange(out, "(th tw) (b n) (ti tj) d -> b (th ti) (tw tj) n d", th=tiles_h, b=batch, ti=tile)
    return out[:, :height, :width]


@functools.cache
def natten_na2d(require_fused: bool = False) -> Callable | None:
    """``natten.functional.na2d`` if NATTEN >= 0.20 is importable (and, with ``require_fused``, was
    built with its fused CUDA kernels, libnatten; without them it runs unfused flex attention), else
    None."""
    try:
        import natten
        from natten.functional import na2d
    except ImportError:
        return None
    major_minor = tuple(int(part) for part in re.findall(r"\d+", natten.__version__)[:2])
    if major_minor < (0, 20) or (require_fused and not natten.HAS_LIBNATTEN):
        return None
    return na2d


def neighborhood_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """2-D neighbourhood attention: (B, H, W, heads, D) q, k, v -> (B, H, W, heads, Dv).

    Each query attends to the k×k window of keys clamped inside the H×W map (module docstring);
    ``kernel_size`` must be odd and at most min(H, W). ``scale`` multiplies the logits (default
    D^-1/2). ``backend``: "auto" (NATTEN's fused kernels on CUDA when installed, else PyTorch),
    "natten" (error if NATTEN >= 0.20 is missing; on CPU it runs NATTEN's forward-only flex path,
    head dims 8..512, powers of two) or "torch".
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check_inputs(q, k, v, kernel_size)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    # "auto" takes NATTEN only where its fused kernels apply: CUDA, libnatten built, head dims a
    # multiple of 8 (else it would fall back to unfused attention), kernel_size > 1 (it rejects 1).
    use_natten = backend == "natten" or (
        backend == "auto" and q.is_cuda and kernel_size > 1 and q.shape[-1] % 8 == 0 and v.shape[-1] % 8 == 0
        and natten_na2d(require_fused=True) is not None
    )
    if not use_natten:
        return _tiled_neighborhood_attention(q, k, v, kernel_size, scale)
    na2d = natten_na2d()
    if na2d is None:
        raise RuntimeError("backend='natten' needs natten>=0.20 (pip install 'latent-pmrf[natten]'); "
                           "use backend='torch' or 'auto' without it")
    return na2d(q.contiguous(), k.contiguous(), v.contiguous(), kernel_size=kernel_size, scale=scale)
