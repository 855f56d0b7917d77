"""Single-image reflection removal (SIRR) data: the field's folder layout and benchmark table, and
the datasets the training mix is made of; all images read through ``ImageFiles``.

Layout (ERRNet, DSRNet, RDNet): a pair folder holds ``blended/`` (the photo through glass) and
``transmission_layer/`` (the target), same file names; synthetic sets may add ``reflection_layer/``.

* ``SyntheticReflectionDataset`` -- background (transmission) images and reflection images, blended
  on the fly by ``ReflectionSynthesis`` (the VOC2012 half of the usual training mix).
* ``ReflectionPairDataset`` -- real pairs (Zhang et al.'s 90, Nature's 200; the test sets).
* ``MixedSourcesDataset`` -- items drawn from several sources with fixed probabilities (the usual
  mix: synthetic/real/nature 0.6/0.2/0.2, DSRNet ``train_sirs_4000.py``).

Items look like the BFR ones: ``{"lq": blended, "gt": transmission, "index", "skipped"}``, (3, H, W)
tensors in [-1, 1]. Training item ``(epoch, index)`` (from ``EpochIndexSampler``; a plain index uses
``self.epoch``) draws everything (crop, flip, rotation, the reflection image, the synthesis) from a
generator seeded by ``(seed, epoch, index)``; validation items by ``(seed, index)`` only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .bfr_datasets import item_rng
from .image_folder import (MAX_CONSECUTIVE_SKIPS, READ_ERROR_POLICIES, ImageFiles, center_crop, check_small_images,
                           random_crop, to_tensor, upscale_short_side)
from .image_io import ImageReadError, list_images, to_uint8
from .mixing import check_mixture
from .reflection import ReflectionParams, ReflectionSynthesis, SynthesizedReflection

log = logging.getLogger(__name__)

BLENDED, TRANSMISSION, REFLECTION = "blended", "transmission_layer", "reflection_layer"
ALIGN_MULTIPLE = 32  # DSRNet/RDNet ``DSRTestDataset.align``: both images resized to the floor multiple of 32


@dataclass(frozen=True)
class SIRRSet:
    """A dataset of the field's layout: ``path`` under the data root, its image count, and the group
    it is averaged in (GenSIRR's table reports Real20, SIR² pooled, Nature and the image-weighted
    average of all)."""

    name: str
    path: str
    count: int
    group: str
    source: str
    names: tuple[str, ...] | None = None  # file stems the set is restricted to, if its folder holds more


# ERRNet/DSRNet/RDNet ``real_test.txt``: the 20 test images of Zhang et al. (2018) evaluated as Real20.
REAL20_STEMS = ("3", "4", "9", "12", "15", "22", "23", "25", "29", "39", "46", "47", "58", "86", "87", "89", "93",
                "103", "107", "110")

SIRR_TEST_SETS = (
    SIRRSet("real20", "test/real20_420", 20, "real20", "Zhang et al. 2018 (ERRNet's real_test.txt)", REAL20_STEMS),
    SIRRSet("sir2_objects", "test/SIR2/SolidObjectDataset", 200, "sir2", "SIR² (Wan et al. 2017), Objects"),
    SIRRSet("sir2_postcard", "test/SIR2/PostcardDataset", 199, "sir2", "SIR² (Wan et al. 2017), Postcard"),
    SIRRSet("sir2_wild", "test/SIR2/WildSceneDataset", 55, "sir2", "SIR² (Wan et al. 2017), Wild"),
    SIRRSet("nature", "test/Nature", 20, "nature", "Nature (IBCLN, Li et al. 2020)"),
)
SIRR_TRAIN_PAIR_SETS = (
    SIRRSet("real", "train/real", 90, "real", "Zhang et al. 2018, 90 real training pairs"),
    SIRRSet("nature", "train/nature", 200, "nature", "Nature (IBCLN, Li et al. 2020), 200 training pairs"),
)
# ERRNet's VOC2012_224_train_png.txt lists 15,287 PNGs; ERRNet/DSRNet split them into background and
# reflection halves: 7,643 synthetic pairs per epoch.
VOC_TRAIN_DIR = "train/VOCdevkit/VOC2012/PNGImages"
VOC_TRAIN_COUNT = 15_287


# ------------------------------------------------------------------------------ resizing
def floor_multiple_size(width: int, height: int, multiple: int = ALIGN_MULTIPLE) -> tuple[int, int]:
    """(W, H) rounded down to multiples of ``multiple``; an error if a side would vanish."""
    size = (width // multiple * multiple, height // multiple * multiple)
    if min(size) < 1:
        raise ValueError(f"a {width}x{height} image has no side of at least {multiple} pixels to align to")
    return size


def pil_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> (size[1], size[0], 3) by PIL's default filter for RGB (bicubic), as
    ``Image.resize((w, h))`` in DSRNet/RDNet's ``align``; unchanged if already that size."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(tuple(size), Image.Resampling.BICUBIC))


def align_to_multiple(image: np.ndarray, multiple: int = ALIGN_MULTIPLE) -> np.ndarray:
    """uint8 (H, W, 3) resized to the floor multiple of ``multiple`` (PIL bicubic): what the SIRR
    protocol does to the network input and the ground truth."""
    return pil_resize(image, floor_multiple_size(image.shape[1], image.shape[0], multiple))


def _pil_resize_unit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``pil_resize`` of a [0, 1] float image (through its 8-bit levels, as the field reads JPEG/PNG)."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return pil_resize(to_uint8(image, value_range=(0, 1)), size).astype(np.float32) / np.float32(255.0)


def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, C) so that its shorter side is ``size`` (area when shrinking, bicubic when
    enlarging, clipped to [0, 1]); DSRNet rescales the shorter side to a random size before cropping."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    if scale == 1:
        return image
    new = (max(size, round(w * scale)), max(size, round(h * scale)))  # (W, H)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    # OpenCV resizes at most 4 channels at a time: a stacked pair goes 3 by 3
    out = [cv2.resize(np.ascontiguousarray(image[..., c : c + 3]), new, interpolation=interpolation).reshape(
        new[1], new[0], -1) for c in range(0, image.shape[2], 3)]
    return np.clip(np.concatenate(out, axis=2), 0.0, 1.0)


# ------------------------------------------------------------------------------ crops
@dataclass
class SIRRAugmentConfig:
    """Geometry of training items (DSRNet ``paired_data_transforms``: shorter side to a random size in
    [224, 448], horizontal flip w.p. 0.5, rotation by 90/180/270 w.p. 0.5, a 224² crop; RDNet: [320, 640]
    and 320²). Rotation here is ``np.rot90`` of the whole image: DSRNet's ``TF.rotate`` keeps the
    canvas, so a non-square image loses its corners to black. Validation items: aligned to the floor
    multiple of 32 (pairs, the evaluation protocol), then a centre crop of ``crop_size`` (None: whole)."""

    crop_size: Optional[int] = 256
    short_side_range: Optional[list[int]] = field(default_factory=lambda: [256, 448])  # None: no rescale
    hflip_prob: float = 0.5
    rot90_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.crop_size is not None and self.crop_size < 1:
            raise ValueError(f"augment.crop_size must be >= 1 or null, got {self.crop_size}")
        for key in ("hflip_prob", "rot90_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"augment.{key} must be a probability in [0, 1], got {getattr(self, key)}")
        if self.short_side_range is not None:
            low_high = self.short_side_range
            if len(low_high) != 2 or not 1 <= low_high[0] <= low_high[1]:
                raise ValueError(f"augment.short_side_range must be [low, high] with 1 <= low <= high, got {low_high}")
            if self.crop_size is not None and low_high[0] < self.crop_size:
                raise ValueError(f"augment.short_side_range {low_high} starts below crop_size {self.crop_size}")


def random_geometry(image: np.ndarray, cfg: SIRRAugmentConfig, rng: np.random.Generator, path: Path) -> np.ndarray:
    """Training geometry of (H, W, C): the channels of aligned images stacked (a blended/transmission
    pair is (H, W, 6)) get one and the same rescale, flip, rotation and crop."""
    if cfg.short_side_range is not None:
        image = resize_short_side(image, int(rng.integers(cfg.short_side_range[0], cfg.short_side_range[1] + 1)))
    if rng.random() < cfg.hflip_prob:
        image = image[:, ::-1]
    if rng.random() < cfg.rot90_prob:
        image = np.rot90(image, int(rng.integers(1, 4)))
    if cfg.crop_size is not None:
        image = random_crop(image, cfg.crop_size, rng, path)
    return np.ascontiguousarray(image)


def crop_floor(augment: SIRRAugmentConfig, train: bool) -> int | None:
    """The shorter side a training image needs before ``random_geometry``: the crop, unless the
    geometry rescales every image to at least the crop first (``short_side_range``); None if none."""
    return augment.crop_size if train and augment.short_side_range is None else None


def fit_to(image: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random (height, width) window of ``image``, enlarged first (bicubic) if it is smaller: how a
    reflection image is brought to its background's size."""
    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    if scale > 1:
        image = np.clip(cv2.resize(np.ascontiguousarray(image), (max(width, int(np.ceil(w * scale))),
                                                               max(height, int(np.ceil(h * scale)))),
                                   interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
        h, w = image.shape[:2]
    top, left = int(rng.integers(0, h - height + 1)), int(rng.integers(0, w - width + 1))
    return np.ascontiguousarray(image[top : top + height, left : left + width])


# ------------------------------------------------------------------------------ pair folders
def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def list_pairs(root: str | Path, names: tuple[str, ...] | None = None,
               limit: int | None = None) -> list[tuple[Path, Path]]:
    """(blended, transmission) files of a pair folder, matched by relative path without suffix, in
    sorted order; ``names``: only these stems (each must be there); the first ``limit``. Errors name
    the folder and the first unmatched files."""
    root = Path(root)
    blended_dir, transmission_dir = root / BLENDED, root / TRANSMISSION
    for folder in (blended_dir, transmission_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"SIRR pair folder {root} has no {folder.name}/ (expected {BLENDED}/ and "
                                    f"{TRANSMISSION}/ with the same file names)")
    transmission = {_key(p, transmission_dir): p for p in list_images(transmission_dir)}
    blended = {_key(p, blended_dir): p for p in list_images(blended_dir)}
    if names is not None:
        absent = [n for n in names if n not in blended or n not in transmission]
        if absent:
            raise FileNotFoundError(f"{root}: {len(absent)} of the {len(names)} listed images are not in both "
                                    f"{BLENDED}/ and {TRANSMISSION}/, e.g. {', '.join(absent[:5])}")
        keys = sorted(names)
    else:
        unmatched = sorted(set(blended) ^ set(transmission))
        if unmatched:
            raise FileNotFoundError(f"{root}: {len(unmatched)} image(s) are in only one of {BLENDED}/ and "
                                    f"{TRANSMISSION}/ (matched by name without suffix), "
                                    f"e.g. {', '.join(unmatched[:5])}")
        keys = sorted(blended)
    keys = keys[:limit] if limit is not None else keys
    return [(blended[k], transmission[k]) for k in keys]


class ItemSource(Protocol):
    """What ``MixedSourcesDataset`` draws from: a length and an item made with a given generator."""

    def __len__(self) -> int: ...

    def load(self, index: int, rng: np.random.Generator) -> dict: ...


class _SeededItems(Dataset):
    """``__getitem__`` -> ``load(index, rng)``, the generator seeded as the module docstring says."""

    seed: int
    train: bool
    epoch: int = 0

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        return self.load(index, item_rng(self.seed, epoch, index) if self.train else item_rng(self.seed, index))


class ReflectionPairDataset(_SeededItems):
    """Real pairs from folders of the field's layout: ``roots`` = [(root, names or None, limit or
    None)], concatenated (the item index runs over all of them). A blended image of another size than
    its transmission is resized to it (PIL bicubic, as DSRNet's ``align``). Training: ``random_geometry``
    on the pair; validation: both aligned to the floor multiple of 32, then centre-cropped. A training
    pair smaller than the crop (``crop_floor``) is skipped or enlarged (``small_images``, as ``ImageFiles``)."""

    def __init__(self, roots: list[tuple[str | Path, tuple[str, ...] | None, int | None]],
                 augment: SIRRAugmentConfig | None = None, seed: int = 0, train: bool = True,
                 on_read_error: str = "skip", small_images: str = "skip", cache: bool = False):
        pairs = [pair for root, names, limit in roots for pair in list_pairs(root, names, limit)]
        policy = on_read_error if train else "raise"
        if policy not in READ_ERROR_POLICIES:
            raise ValueError(f"on_read_error must be one of {READ_ERROR_POLICIES}, got {policy!r}")
        self.blended = ImageFiles([b for b, _ in pairs], on_read_error="raise", cache=cache)
        self.transmission = ImageFiles([t for _, t in pairs], on_read_error="raise", cache=cache)
        check_small_images(small_images)
        self.on_read_error, self.small_images = policy, small_images
        self.augment = augment or SIRRAugmentConfig()
        self.seed, self.train = seed, train
        self.min_size = crop_floor(self.augment, train)

    def __len__(self) -> int:
        return len(self.blended)

    def read_pair(self, index: int) -> tuple[np.ndarray, np.ndarray, Path, int]:
        """(blended, transmission, transmission path, pairs skipped): an unreadable file, or a pair
        smaller than ``min_size`` under ``small_images=skip``, skips its whole pair (warned, counted),
        as ``ImageFiles`` does for one image."""
        for skipped in range(MAX_CONSECUTIVE_SKIPS + 1):
            i = (index + skipped) % len(self)
            try:
                blended, _, _ = self.blended.read(i)
                transmission, path, _ = self.transmission.read(i)
            except ImageReadError as err:
                if self.on_read_error == "raise":
                    raise
                log.warning("skipping an unreadable training pair: %s", err)
                continue
            height, width = transmission.shape[:2]
            blended = _pil_resize_unit(blended, (width, height))
            if self.min_size is not None and min(height, width) < self.min_size:
                if self.small_images == "skip":
                    log.warning("skipping a training pair smaller than the crop: %s is %dx%d, the crop %dx%d",
                                path, width, height, self.min_size, self.min_size)
                    continue
                blended, transmission = (upscale_short_side(x, self.min_size) for x in (blended, transmission))
            return blended, transmission, path, skipped
        raise ImageReadError(f"{MAX_CONSECUTIVE_SKIPS + 1} consecutive unreadable or too small pairs from "
                             f"{self.transmission.files[index]}: check the dataset")

    def load(self, index: int, rng: np.random.Generator) -> dict:
        blended, transmission, path, skipped = self.read_pair(index)
        if self.train:
            pair = random_geometry(np.concatenate([blended, transmission], axis=2), self.augment, rng, path)
        else:
            size = floor_multiple_size(transmission.shape[1], transmission.shape[0])
            pair = np.concatenate([_pil_resize_unit(blended, size), _pil_resize_unit(transmission, size)], axis=2)
            if self.augment.crop_size is not None:
                pair = center_crop(pair, self.augment.crop_size, path)
        return {"lq": to_tensor(pair[..., :3]), "gt": to_tensor(pair[..., 3:]), "index": index, "skipped": skipped}


@dataclass
class SyntheticSample:
    """One synthesised pair with what made it (for ``synth-reflection``'s record)."""

    images: SynthesizedReflection
    params: ReflectionParams
    background: Path
    reflection: Path
    skipped: int


class SyntheticReflectionDataset(_SeededItems):
    """Item i: background i (the transmission) and a reflection image drawn by the item's generator,
    each through ``random_geometry`` (training) or a centre crop (validation; none if ``crop_size`` is
    None), the reflection then fitted to the background's size, and blended by ``synthesis``.

    ``reflection_sources=None`` draws the reflection from the backgrounds themselves, never the same
    file (ERRNet/DSRNet split one VOC list into background and reflection halves, reshuffled every
    epoch; drawing per item is that with a fresh partner every time, and one epoch covers every
    background once). A training image smaller than the crop (``crop_floor``) is skipped or enlarged
    (``small_images``, ``ImageFiles``).
    """

    def __init__(self, background_sources: list[tuple[str | Path, int | None]],
                 reflection_sources: list[tuple[str | Path, int | None]] | None, synthesis: ReflectionSynthesis,
                 augment: SIRRAugmentConfig | None = None, seed: int = 0, train: bool = True,
                 on_read_error: str = "skip", small_images: str = "skip", cache: bool = False):
        policy = on_read_error if train else "raise"
        self.augment = augment or SIRRAugmentConfig()
        floor = crop_floor(self.augment, train)
        self.backgrounds = ImageFiles.from_sources(background_sources, policy, floor, small_images, cache)
        self.reflections = (ImageFiles.from_sources(reflection_sources, policy, floor, small_images, cache)
                            if reflection_sources else None)
        if self.reflections is None and len(self.backgrounds) < 2:
            raise ValueError(f"reflections drawn from the backgrounds need at least 2 images, found "
                             f"{len(self.backgrounds)} under {[str(r) for r, _ in background_sources]}")
        self.synthesis = synthesis
        self.seed, self.train = seed, train

    def __len__(self) -> int:
        return len(self.backgrounds)

    def _geometry(self, image: np.ndarray, rng: np.random.Generator, path: Path) -> np.ndarray:
        if self.train:
            return random_geometry(image, self.augment, rng, path)
        return image if self.augment.crop_size is None else center_crop(image, self.augment.crop_size, path)

    def synthesize(self, index: int, rng: np.random.Generator) -> SyntheticSample:
        background, background_path, skipped_b = self.backgrounds.read(index)
        if self.reflections is None:
            other = int(rng.integers(0, len(self.backgrounds) - 1))
            reflection, reflection_path, skipped_r = self.backgrounds.read(other + (other >= index))
        else:
            reflection, reflection_path, skipped_r = self.reflections.read(int(rng.integers(0, len(self.reflections))))
        background = self._geometry(background, rng, background_path)
        reflection = self._geometry(reflection, rng, reflection_path)
        reflection = fit_to(reflection, background.shape[0], background.shape[1], rng)
        params = self.synthesis.sample_params(rng)
        return SyntheticSample(self.synthesis.apply(background, reflection, params), params, background_path,
                               reflection_path, skipped_b + skipped_r)

    def load(self, index: int, rng: np.random.Generator) -> dict:
        sample = self.synthesize(index, rng)
        return {"lq": to_tensor(sample.images.blended), "gt": to_tensor(sample.images.transmission), "index": index,
                "skipped": sample.skipped}


class MixedSourcesDataset(Dataset):
    """``length`` items per epoch; item ``(epoch, index)`` picks source k with probability
    ``ratios[k]`` and one of its items uniformly, all with the generator of ``(seed, epoch, index)``
    that the source then uses for its own draws (DSRNet ``FusionDataset`` draws the source per item
    the same way). The item's ``index`` is the mix's index."""

    def __init__(self, sources: list[ItemSource], ratios: list[float], length: int, seed: int = 0):
        check_mixture([len(s) for s in sources], ratios, length, "source")
        self.sources, self.ratios, self.length, self.seed = sources, list(ratios), length, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        rng = item_rng(self.seed, epoch, index)
        source = self.sources[int(rng.choice(len(self.sources), p=self.ratios))]
        return {**source.load(int(rng.integers(0, len(source))), rng), "index": index}
