"""Reading images of any common kind as RGB float arrays in [0, 1], and turning images back into
8-bit arrays: the one reading path and the one 8-bit conversion that every dataset, data_prep script
and command of the repository uses."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

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


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1].

    8- and 16-bit files, gray, gray+alpha, RGBA (alpha dropped), palette, CMYK and 1-bit images are
    all converted; EXIF orientation is applied. A missing, empty, corrupt or truncated file raises
    ``ImageReadError`` naming it; so does one of more than ``max_pixels`` pixels, read from its
    header before anything is decoded (a decompression bomb never reaches memory).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    if not data:
        raise ImageReadError(f"cannot read image {path}: the file is empty")
    if max_pixels is not None:
        _check_size(path, data, max_pixels)
    high = _decode_high_bit_depth(data, path)
    if high is not None:
        return high
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # raises on truncated data
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray (PIL may widen it to "I")
                gray = np.asarray(img, dtype=np.float32) / 65535.0
                arr = np.repeat(gray[..., None], 3, axis=2)
            elif img.mode == "F":  # float gray, assumed in [0, 1]
                arr = np.repeat(np.asarray(img, dtype=np.float32)[..., None], 3, axis=2)
            else:  # 8-bit L, LA, P, PA, RGBA, CMYK, YCbCr, 1-bit ...
                arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    return np.clip(arr, 0.0, 1.0)


def _check_size(path: Path, data: bytes, max_pixels: int) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:  # parses the header only
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    except Image.DecompressionBombError as err:  # PIL refuses to even report the size: its message has it
        raise ImageReadError(f"{path}: {str(err).rstrip('.')}; above the limit of {max_pixels / 1e6:.1f} Mpx "
                             "(--max-pixels)") from err
    if width * height > max_pixels:
        raise ImageReadError(f"{path}: {width}x{height} is {width * height / 1e6:.1f} Mpx, above the limit of "
                             f"{max_pixels / 1e6:.1f} Mpx (--max-pixels)")


def is_gray(image: np.ndarray) -> bool:
    """Whether an (H, W, 3) image read by ``read_image`` has three equal channels (a gray file)."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


def _decode_high_bit_depth(data: bytes, path: Path) -> np.ndarray | None:
    """16-bit PNG/TIFF (which PIL reads as 8-bit RGB) through OpenCV; None for everything else.

    A PNG's bit depth is byte 24 of its header (the IHDR chunk), so an 8-bit PNG, the common case,
    is decoded once, by PIL, not a second time here just to find out."""
    is_png = data.startswith(b"\x89PNG\r\n\x1a\n")
    if is_png and (len(data) < 25 or data[12:16] != b"IHDR" or data[24] != 16):
        return None
    if not (is_png or data[:4] in (b"II*\x00", b"MM\x00*")):
        return None
    if is_png:  # PIL's decompression-bomb limit, which OpenCV does not apply, from the header
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if Image.MAX_IMAGE_PIXELS is not None and width * height > 2 * Image.MAX_IMAGE_PIXELS:
            raise ImageReadError(f"cannot read image {path}: {width}x{height} 16-bit PNG is {width * height / 1e6:.0f} Mpx, above the "
                                 f"decompression-bomb limit of {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        return None
    arr = arr.astype(np.float32) / 65535.0
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr[..., ::-1]) if arr.shape[2] == 3 else np.repeat(arr[..., :1], 3, axis=2)


def to_uint8(image: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Image(s) with values in ``value_range`` -> 8-bit levels, channels last: ``round(255·u)`` of
    u = (image - low) / (high - low) clamped to [0, 1], rounding half to even.

    A tensor is channels-first (the models' layout): (C, H, W) -> (H, W, C), (B, C, H, W) ->
    (B, H, W, C). A NumPy array is channels-last already (``read_image``'s layout) and keeps its shape.
    """
    low, high = value_range
    if isinstance(image, torch.Tensor):
        unit = ((image.detach().float() - low) / (high - low)).clamp(0, 1)
        return torch.round(unit * 255).to(torch.uint8).movedim(-3, -1).cpu().numpy()
    unit = np.clip((np.asarray(image) - low) / (high - low), 0, 1)
    return np.rint(unit * 255).astype(np.uint8)
