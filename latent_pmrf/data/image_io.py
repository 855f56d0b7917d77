"""Reading images of any common kind as RGB float arrays in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ImageReadError(OSError):
    """An image file could not be decoded; the message names the file."""


def list_images(root: str | Path, limit: int | None = None) -> list[Path]:
    """Image files under ``root`` (recursive), sorted by path; the first ``limit`` if given."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files[:limit] if limit is not None else files


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from 8/16-bit, gray, RGBA, palette or CMYK files."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray
                gray = np.asarray(img, dtype=np.float32) / 65535.0
                arr = np.repeat(gray[..., None], 3, axis=2)
            else:  # 8-bit L, P, LA, RGBA (alpha dropped), CMYK, 1-bit ...
                arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    return np.clip(arr, 0.0, 1.0)
