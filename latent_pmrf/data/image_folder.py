"""Image-folder reading shared by every dataset, and the plain folders autoencoders train on.

``ImageFiles`` is the one reading path: a sorted file list plus the policy for unreadable files and
for images smaller than the training crop. Training sets use ``on_read_error="skip"``: the next
readable file takes the place of a corrupt one, a warning names it, and the item reports how many
files it skipped so that the training module logs a running count (``data/skipped_files``); nothing
is dropped silently. Evaluation sets use ``"raise"``: an error naming the file.

An image whose shorter side is below the crop (``min_size``) is, with ``small_images="skip"``
(default), skipped and counted in the same way; with ``"upscale"`` it is enlarged (Lanczos) so
that its shorter side equals the crop, keeping its aspect ratio.

``cache=True`` keeps every image after its first read, decoded (float32, 12 bytes a pixel, in each
dataloader worker separately) and read-only, so that no crop or degradation can alter it, and
remembers which files were skipped (warned about once): for small sets such as the quickstart's
eight photos, whose PNG decoding took most of a CPU training step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .image_io import ImageReadError, list_images, read_image

log = logging.getLogger(__name__)

READ_ERROR_POLICIES = ("skip", "raise")
SMALL_IMAGE_POLICIES = ("skip", "upscale")
MAX_CONSECUTIVE_SKIPS = 16


def check_small_images(value: str) -> None:
    if value not in SMALL_IMAGE_POLICIES:
        raise ValueError(f"data.small_images must be one of {SMALL_IMAGE_POLICIES}, got {value!r}")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float array in [0, 1] -> (3, H, W) tensor in [-1, 1]; a read-only (cached) array is
    copied first, since torch cannot wrap it."""
    return torch.from_numpy(np.require(image, requirements=("C", "W"))).permute(2, 0, 1).mul(2.0).sub(1.0).contiguous()


def upscale_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) in [0, 1] enlarged (Lanczos, clipped to [0, 1]) so that its shorter side is ``size``,
    the longer one in proportion; unchanged if the shorter side is ``size`` or more."""
    h, w = image.shape[:2]
    if min(h, w) >= size:
        return image
    scale = size / min(h, w)
    new = (size if w <= h else round(w * scale), size if h < w else round(h * scale))  # (W, H)
    return np.clip(cv2.resize(np.ascontiguousarray(image), new, interpolation=cv2.INTER_LANCZOS4), 0.0, 1.0)


def header_sizes(files: list[Path], max_checked: int) -> tuple[list[tuple[Path, int, int]], int]:
    """([(path, width, height)] read from the headers alone (nothing decoded), number checked): at
    most ``max_checked`` files, evenly spaced over the list. A file whose header cannot be read is
    left out (the training-time policy deals with it)."""
    step = max(1, -(-len(files) // max_checked))
    checked = files[::step]
    sizes = []
    for path in checked:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue
        sizes.append((path, width, height))
    return sizes, len(checked)


def images_smaller_than(files: list[Path], size: int, max_checked: int) -> tuple[list[tuple[Path, int, int]], int]:
    """([(path, width, height)] of the files whose shorter side is below ``size``, number checked),
    from the headers of at most ``max_checked`` files (``header_sizes``)."""
    sizes, checked = header_sizes(files, max_checked)
    return [(path, w, h) for path, w, h in sizes if min(w, h) < size], checked


class ImageFiles:
    """A list of image files and what to do with an unreadable one or one smaller than ``min_size``
    (see the module docstring)."""

    def __init__(self, files: list[Path], on_read_error: str = "skip", min_size: int | None = None,
                 small_images: str = "skip", cache: bool = False):
        if on_read_error not in READ_ERROR_POLICIES:
            raise ValueError(f"on_read_error must be one of {READ_ERROR_POLICIES}, got {on_read_error!r}")
        check_small_images(small_images)
        self.files = list(files)
        self.on_read_error = on_read_error
        self.min_size, self.small_images = min_size, small_images
        self.skipped_here = 0  # in this process (each dataloader worker has its own copy)
        self.cache: dict[int, np.ndarray | None] | None = {} if cache else None  # file position: image or skipped

    @classmethod
    def from_sources(cls, sources: list[tuple[str | Path, int | None]], on_read_error: str = "skip",
                     min_size: int | None = None, small_images: str = "skip", cache: bool = False) -> ImageFiles:
        """Images from several folders: ``sources`` = [(root, limit)], each in sorted path order, the
        first ``limit`` of it if given (the paper's VAE uses LSDIR crops + the first 10,000 FFHQ)."""
        return cls([f for root, limit in sources for f in list_images(root, limit)], on_read_error, min_size,
                   small_images, cache)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> tuple[np.ndarray, Path, int]:
        """(image, path, number of unreadable or too small files skipped to get it)."""
        if not 0 <= index < len(self.files):
            raise IndexError(f"image index {index} out of range for {len(self.files)} files")
        for skipped in range(MAX_CONSECUTIVE_SKIPS + 1):
            position = (index + skipped) % len(self.files)
            image = self._load(position)
            if image is not None:
                return image, self.files[position], skipped
        raise ImageReadError(f"{MAX_CONSECUTIVE_SKIPS + 1} consecutive unreadable or too small images from "
                             f"{self.files[index]}: check the dataset")

    def _load(self, position: int) -> np.ndarray | None:
        """The image of file ``position`` (enlarged if small and ``small_images="upscale"``), or
        None if it is skipped (warned about); with ``cache``, decided once per file, images read-only."""
        if self.cache is not None and position in self.cache:
            return self.cache[position]
        path = self.files[position]
        try:
            image = read_image(path)
        except ImageReadError as err:
            if self.on_read_error == "raise":
                raise
            self._skip("unreadable", str(err))
            image = None
        else:
            height, width = image.shape[:2]
            if self.min_size is not None and min(height, width) < self.min_size:
                if self.small_images == "upscale":
                    image = upscale_short_side(image, self.min_size)
                else:
                    self._skip("too small", f"{path} is {width}x{height}, smaller than the crop "
                               f"{self.min_size}x{self.min_size} (data.small_images=upscale enlarges such "
                               "images instead)")
                    image = None
        if self.cache is not None:
            if image is not None:
                image.flags.writeable = False
            self.cache[position] = image
        return image

    def _skip(self, why: str, detail: str) -> None:
        self.skipped_here += 1
        log.warning("skipping %s training image (%d so far in this process): %s", why, self.skipped_here, detail)


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator, path: Path) -> np.ndarray:
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"{path} is {w}x{h}, smaller than the crop {size}x{size}")
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[top : top + size, left : left + size]


def center_crop(image: np.ndarray, size: int, path: Path) -> np.ndarray:
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"{path} is {w}x{h}, smaller than the crop {size}x{size}")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


class ImageFolderCrops(Dataset):
    """Random ``crop_size`` crops (and optional horizontal flips): ``{"image", "skipped", "path"}``.

    Item ``(epoch, index)`` (from ``EpochIndexSampler``; a plain index uses ``self.epoch``) draws
    its crop and flip from a generator seeded by ``(seed, epoch, index)``: the same in every
    dataloader worker, rank and restart, and new in every epoch.
    """

    def __init__(self, sources: list[tuple[str | Path, int | None]], crop_size: int, hflip: bool = True,
                 repeat: int = 1, on_read_error: str = "skip", seed: int = 0, small_images: str = "skip",
                 cache: bool = False):
        self.images = ImageFiles.from_sources(sources, on_read_error, min_size=crop_size, small_images=small_images,
                                              cache=cache)
        self.crop_size = crop_size
        self.hflip = hflip
        self.repeat = repeat  # each image appears `repeat` times per epoch, each time a new crop
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        from .bfr_datasets import item_rng  # bfr_datasets imports this module

        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        image, path, skipped = self.images.read(index % len(self.images))
        rng = item_rng(self.seed, epoch, index)
        crop = random_crop(image, self.crop_size, rng, path)
        if self.hflip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        return {"image": to_tensor(crop), "skipped": skipped, "path": str(path)}


class ImageFolderCenter(Dataset):
    """Deterministic centre crops (validation): the same pixels every epoch and every run."""

    def __init__(self, root: str | Path, crop_size: int, limit: int | None = None):
        self.images = ImageFiles(list_images(root, limit), on_read_error="raise")
        self.crop_size = crop_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image, path, _ = self.images.read(index)
        return {"image": to_tensor(center_crop(image, self.crop_size, path))}
