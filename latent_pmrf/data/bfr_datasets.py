"""Blind face restoration datasets; all read through ``ImageFiles``.

* ``PairedOnlineDataset`` -- HQ folders, LQ synthesised on the fly by a ``BFRDegradation``
  (training on FFHQ-512 / LSDIR crops; validation with fixed LQ).
* ``PairedFolderDataset`` -- precomputed LQ/GT pairs, matched by relative path (CelebA-Test).

Items are dicts of (3, H, W) tensors in [-1, 1] plus bookkeeping (``index``, ``path``,
``skipped``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .degradations import BFRDegradation
from .image_folder import ImageFiles, center_crop, random_crop, to_tensor
from .image_io import list_images


def item_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on (seed, *keys): the same in every worker, rank and machine."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


class PairedOnlineDataset(Dataset):
    """HQ images with LQ made on the fly.

    Training (``train=True``): item ``(epoch, index)`` (from ``EpochIndexSampler``; a plain index
    uses ``self.epoch``) is degraded with a generator seeded from ``(seed, epoch, index)``, so
    DDP ranks and dataloader workers never repeat or collide, and a run is reproducible.
    Validation (``train=False``): the generator depends on ``(seed, index)`` only, so every
    evaluation of every run sees the same LQ. Images larger than ``crop_size`` are cropped
    (randomly for training, centrally for validation); ``crop_size=None`` keeps them whole. A
    training image smaller than the crop is skipped or enlarged (``small_images``, ``ImageFiles``).
    """

    def __init__(self, sources: list[tuple[str | Path, int | None]], degradation: BFRDegradation,
                 crop_size: int | None = None, seed: int = 0, train: bool = True, on_read_error: str = "skip",
                 small_images: str = "skip", cache: bool = False):
        self.images = ImageFiles.from_sources(sources, on_read_error if train else "raise",
                                              min_size=crop_size if train else None, small_images=small_images,
                                              cache=cache)
        self.degradation = degradation
        self.crop_size = crop_size
        self.seed = seed
        self.train = train
        self.epoch = 0
        self.whole_size: tuple[tuple[int, int], Path] | None = None  # (H, W) and file of the first whole image

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        rng = item_rng(self.seed, epoch, index) if self.train else item_rng(self.seed, index)
        image, path, skipped = self.images.read(index)
        if self.crop_size is not None:
            image = random_crop(image, self.crop_size, rng, path) if self.train else center_crop(image, self.crop_size, path)
        elif self.train:  # whole images are batched: one size for all (tasks.py checks the headers first)
            self.whole_size = self.whole_size or (image.shape[:2], path)
            if image.shape[:2] != self.whole_size[0]:
                (h, w), (h0, w0) = image.shape[:2], self.whole_size[0]
                raise ValueError(f"{path} is {w}x{h} but {self.whole_size[1]} is {w0}x{h0}: with data.crop_size null "
                                 "every training image must have one size; set data.crop_size or resize them")
        lq, gt = self.degradation(image, rng)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "index": index, "skipped": skipped, "path": str(path)}


class PairedFolderDataset(Dataset):
    """Precomputed pairs: ``lq_root/a/b.png`` pairs with ``gt_root/a/b.*`` (any image suffix)."""

    def __init__(self, lq_root: str | Path, gt_root: str | Path, limit: int | None = None):
        self.lq_root, self.gt_root = Path(lq_root), Path(gt_root)
        gt_by_key = {self._key(p, self.gt_root): p for p in list_images(self.gt_root)}
        lq_files = list_images(self.lq_root, limit)
        missing = [p for p in lq_files if self._key(p, self.lq_root) not in gt_by_key]
        if missing:
            raise FileNotFoundError(f"{len(missing)} LQ image(s) have no GT counterpart under {self.gt_root}, "
                                    f"e.g. {missing[0]} (pairs are matched by relative path without suffix)")
        self.lq = ImageFiles(lq_files, on_read_error="raise")
        self.gt = ImageFiles([gt_by_key[self._key(p, self.lq_root)] for p in lq_files], on_read_error="raise")

    @staticmethod
    def _key(path: Path, root: Path) -> str:
        return path.relative_to(root).with_suffix("").as_posix()

    def __len__(self) -> int:
        return len(self.lq)

    def __getitem__(self, index: int) -> dict:
        lq, lq_path, _ = self.lq.read(index)
        gt, gt_path, _ = self.gt.read(index)
        if lq.shape != gt.shape:
            raise ValueError(f"size mismatch: {lq_path} is {lq.shape[1]}x{lq.shape[0]}, "
                             f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}")
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "path": self._key(lq_path, self.lq_root), "index": index}
