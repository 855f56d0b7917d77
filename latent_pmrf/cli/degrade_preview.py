"""``latent-pmrf degrade-preview``: a grid of synthetic LQ samples drawn from one HQ image, each
tile captioned with its degradation parameters, to see what a degradation config produces.

The first tile is the (resized) input, labelled ``GT``; then ``n`` samples, ⌈√n⌉ columns. Sample
``i`` uses ``numpy.random.default_rng(SeedSequence([seed, i]))``, so a tile can be reproduced
alone and the same seed writes the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_write
from ..config import ConfigError
from ..data.degradations import DEGRADATION_PRESETS, BFRDegradation
from ..data.image_io import read_image, to_uint8

DEFAULT_MAX_SIZE = 512
# PIL's default font has no Greek glyphs; DegradationParams.describe() uses two of them.
FONT_FALLBACK = str.maketrans({"σ": "sigma", "θ": "theta"})


def load_degradation(preset: str | None = None, config: str | Path | None = None) -> BFRDegradation:
    """``BFRDegradation`` from a preset name or a YAML file of ``DegradationConfig`` fields
    (optionally with ``preset:``); errors name the preset or the file and key."""
    if config is None:
        preset = preset or "difface"
        if preset not in DEGRADATION_PRESETS:
            raise ValueError(f"unknown degradation preset {preset!r}; available: {sorted(DEGRADATION_PRESETS)}")
        return BFRDegradation.from_preset(preset)
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"degradation config not found: {path.resolve()}")
    try:
        values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read degradation config: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of DegradationConfig fields")
    try:
        return BFRDegradation.from_dict(values)
    except (KeyError, ValueError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ConfigError(f"{path}: {message}") from err


def square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop (H, W, 3) to a square, then resize to size×size (area when shrinking)."""
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top : top + side, left : left + side]
    if side != size:
        interpolation = cv2.INTER_AREA if size < side else cv2.INTER_CUBIC
        img = np.clip(cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=interpolation), 0.0, 1.0)
    return np.ascontiguousarray(img, dtype=np.float32)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels (a single over-long word stays on its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def caption_grid(tiles: list[np.ndarray], captions: list[str], columns: int) -> Image.Image:
    """Tiles (equal (H, W, 3) float arrays in [0, 1]) in a grid, each with its caption wrapped on a
    white strip below it."""
    h, w = tiles[0].shape[:2]
    font = ImageFont.load_default(size=max(10, w // 20))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(measure, c.translate(FONT_FALLBACK), font, w - 8) for c in captions]
    ascent, descent = font.getmetrics()
    line_height = ascent + descent + 2
    strip = 6 + line_height * max(len(lines) for lines in wrapped)
    rows = math.ceil(len(tiles) / columns)
    grid = Image.new("RGB", (columns * w, rows * (h + strip)), "white")
    draw = ImageDraw.Draw(grid)
    for k, (tile, lines) in enumerate(zip(tiles, wrapped)):
        x, y = (k % columns) * w, (k // columns) * (h + strip)
        grid.paste(Image.fromarray(to_uint8(tile, value_range=(0, 1))), (x, y))
        for j, line in enumerate(lines):
            draw.text((x + 4, y + h + 3 + j * line_height), line, fill="black", font=font)
    return grid


def degrade_preview(image: str | Path, out: str | Path, preset: str | None = "difface", n: int = 16,
                    seed: int = 0, size: int | None = None, config: str | Path | None = None) -> Path:
    """Write the preview grid of ``n`` degradations of ``image`` to the PNG ``out``; returns its path.

    ``size``: centre-crop to a square and resize to size×size first; ``None`` keeps an image whose
    sides are at most 512 and brings a larger one to 512×512. ``config`` (a YAML file) replaces
    ``preset``.
    """
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    degradation = load_degradation(preset, config)
    image = Path(image)
    if not image.is_file():
        raise FileNotFoundError(f"input image not found: {image.resolve()}")
    hq = read_image(image)
    if size is not None:
        hq = square_resize(hq, size)
    elif max(hq.shape[:2]) > DEFAULT_MAX_SIZE:
        hq = square_resize(hq, DEFAULT_MAX_SIZE)
    max_scale = degradation.config.downsample_range[1]
    if min(hq.shape[:2]) < max_scale:
        raise ValueError(f"{image}: {hq.shape[1]}x{hq.shape[0]} is too small for downsampling by up to "
                         f"{max_scale:g}; pass a larger --size")

    tiles, captions = [hq], ["GT"]
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        params = degradation.sample_params(rng)
        lq, _ = degradation.apply(hq, params, rng)
        tiles.append(lq)
        captions.append(f"#{i} {params.describe()}")
    grid = caption_grid(tiles, captions, columns=math.ceil(math.sqrt(n)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda tmp: grid.save(tmp, format="PNG"))
