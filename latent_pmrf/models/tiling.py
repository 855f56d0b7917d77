"""Tiled VAE encode/decode for images of any size: overlapping tiles, seams blended with linear
ramps. Sim-VAE is fully convolutional with per-pixel norms and no attention (paper App. B.1), so a
tile with a margin wider than the receptive field reproduces the untiled output in its interior;
the ramps hide what is left at the seams (the official release tiles the same way, in its
``tilevae.py`` / pipeline ``tile_processing``).

``tiled(fn, x, tile, overlap, scale)`` applies ``fn`` (B, C, h, w) -> (B, C', h·scale, w·scale) tile
by tile; ``scale`` is 1/8 for an f8 encoder, 8 for its decoder. Within an overlap the outer quarter
next to each tile's edge gets no weight, so the result is exact wherever the receptive field is
at most ``overlap / 4`` (more overlap, more exactness, more compute).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(length: int, left: int, right: int, device, dtype) -> torch.Tensor:
    """Blending weights along one side of a tile: 1 inside; towards an edge shared with a neighbour
    over ``left``/``right`` samples of overlap, 0 on the outer quarter (where the tile lacks
    context), rising linearly over the middle half, so each overlap is filled by the tile that
    sees more of the image around it."""
    w = torch.ones(length, device=device, dtype=dtype)
    for overlap, flip in ((left, False), (right, True)):
        if not overlap:
            continue
        margin = overlap // 4
        d = torch.arange(overlap, device=device, dtype=dtype)  # distance from the edge
        ramp = ((d - margin + 1) / (overlap - 2 * margin + 1)).clamp(0, 1)
        if flip:
            w[length - overlap:] = torch.minimum(w[length - overlap:], ramp.flip(0))
        else:
            w[:overlap] = torch.minimum(w[:overlap], ramp)
    return w


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
          scale: float) -> torch.Tensor:
    """``fn(x)`` computed on overlapping ``tile``² tiles of x (B, C, H, W) and blended."""
    if overlap >= tile or overlap < 0:
        raise ValueError(f"tile overlap must be in [0, tile), got overlap {overlap} for tile {tile}")
    h, w = x.shape[-2:]
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = weight = None
    for iy, y0 in enumerate(ys):
        for ix, x0 in enumerate(xs):
            th, tw = min(tile, h), min(tile, w)
            piece = fn(x[..., y0:y0 + th, x0:x0 + tw])  # (B, C', th·scale, tw·scale)
            if out is None:
                out = piece.new_zeros(*piece.shape[:2], round(h * scale), round(w * scale))
                weight = piece.new_zeros(1, 1, *out.shape[-2:])
            oy, ox, ph, pw = round(y0 * scale), round(x0 * scale), piece.shape[-2], piece.shape[-1]
            # ramps where this tile overlaps a neighbour: up to the previous tile's end / the next one's start
            top = round((ys[iy - 1] + th - y0) * scale) if iy > 0 else 0
            bottom = round((y0 + th - ys[iy + 1]) * scale) if iy + 1 < len(ys) else 0
            left = round((xs[ix - 1] + tw - x0) * scale) if ix > 0 else 0
            right = round((x0 + tw - xs[ix + 1]) * scale) if ix + 1 < len(xs) else 0
            mask = (_ramp(ph, top, bottom, piece.device, piece.dtype)[:, None]
                    * _ramp(pw, left, right, piece.device, piece.dtype)[None, :])
            out[..., oy:oy + ph, ox:ox + pw] += piece * mask
            weight[..., oy:oy + ph, ox:ox + pw] += mask
    return out / weight.clamp_min(torch.finfo(weight.dtype).tiny)
