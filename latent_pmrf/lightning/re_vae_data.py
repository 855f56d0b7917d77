"""Data of re-VAE fine-tuning: random crops of (background, reflection) pairs for training, and
held-out α-mixtures fixed per index for validation and ``latent-pmrf vae-equivariance``.

The mixture itself, I = (1-α)B + αR, is formed where the loss is (``losses/equivariance.py``), so
that the pairing that builds I also builds the target.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data.bfr_datasets import item_rng
from ..data.image_folder import ImageFolderCenter, ImageFolderCrops
from ..seeding import derive_seed
from .re_vae_config import ReVAEDataConfig
from .vae_data import VAEDataModule


class LayerPairCrops(Dataset):
    """Item ``(epoch, index)`` (``EpochIndexSampler``; a plain index is epoch 0): background crop
    ``index`` with a crop of reflection ``j``, j drawn from ``(seed, epoch, index)``, so pairs and
    crops are the same in every worker, rank and restart (give the two crop sets different seeds):
    ``{"background", "reflection", "skipped", "path"}``, images (3, S, S) in [-1, 1]."""

    def __init__(self, background: ImageFolderCrops, reflection: ImageFolderCrops, seed: int = 0):
        self.background = background
        self.reflection = reflection
        self.seed = seed

    def __len__(self) -> int:
        return len(self.background)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        background = self.background[(epoch, index)]
        # key 1: a stream apart from the background crop's own (seed, epoch, index)
        reflection_index = int(item_rng(self.seed, epoch, index, 1).integers(len(self.reflection)))
        reflection = self.reflection[(epoch, reflection_index)]
        return {"background": background["image"], "reflection": reflection["image"],
                "skipped": background["skipped"] + reflection["skipped"],
                "path": f"{background['path']} + {reflection['path']}"}


class HeldOutMixtures(Dataset):
    """``n`` fixed (background, reflection, α) triples of centre crops: item i pairs background
    i mod N_B with reflection j and α ~ U[0, 1], j and α drawn from ``(seed, i)``, so the
    set does not depend on the batch size. With one folder for both (``reflection_dir=None``) an
    image is never paired with itself."""

    def __init__(self, background_dir: str | Path, reflection_dir: str | Path | None, crop_size: int, n: int,
                 seed: int = 0):
        self.backgrounds = ImageFolderCenter(background_dir, crop_size)
        self.same_folder = reflection_dir is None or Path(reflection_dir).resolve() == Path(background_dir).resolve()
        self.reflections = self.backgrounds if self.same_folder else ImageFolderCenter(reflection_dir, crop_size)
        if self.same_folder and len(self.backgrounds) < 2:
            raise ValueError(f"{background_dir} holds one image: mixing it with itself measures nothing; "
                             "give a second image or a separate reflection folder")
        self.n = n
        self.seed = seed

    def __len__(self) -> int:
        return self.n

    def pair(self, index: int) -> tuple[int, int, float]:
        """(background index, reflection index, α) of item ``index``."""
        rng = item_rng(self.seed, index)
        b = index % len(self.backgrounds)
        r = int(rng.integers(len(self.reflections)))
        if self.same_folder and r == b:
            r = (r + 1) % len(self.reflections)
        return b, r, float(rng.uniform(0.0, 1.0))

    def __getitem__(self, index: int) -> dict:
        b, r, alpha = self.pair(index)
        return {"background": self.backgrounds[b]["image"], "reflection": self.reflections[r]["image"],
                "alpha": torch.tensor(alpha, dtype=torch.float32)}


class ReVAEDataModule(VAEDataModule):
    """The VAE data module's loaders (seeded, resumable, sharding ranks itself: build the Trainer
    with ``use_distributed_sampler=False``) over layer pairs (``data.pairing=sets``) or single
    crops (``permute``: the module pairs each batch with itself)."""

    def __init__(self, cfg: ReVAEDataConfig):
        super(VAEDataModule, self).__init__()  # VAEDataModule's own check reads data.train, which this config has not
        if not cfg.background:
            raise ValueError("data.background lists no image folders: add at least one {root: DIR}")
        if cfg.pairing == "sets" and not cfg.reflection:
            raise ValueError("data.pairing=sets needs data.reflection folders (or use data.pairing=permute)")
        self.cfg = cfg
        self.seed = cfg.seed

    def setup(self, stage: str | None = None) -> None:
        c = self.cfg

        def crops(sources, seed: int) -> ImageFolderCrops:
            return ImageFolderCrops([(s.root, s.limit) for s in sources], c.crop_size, c.hflip, c.repeat,
                                    c.on_read_error, seed=seed, small_images=c.small_images, cache=c.cache_images)

        backgrounds = crops(c.background, self.seed)
        self.train_set = backgrounds if c.pairing == "permute" else LayerPairCrops(
            backgrounds, crops(c.reflection, derive_seed(self.seed, 1)), self.seed)
        self.val_set = (HeldOutMixtures(c.val_background_dir, c.val_reflection_dir, c.val_crop_size, c.val_limit,
                                        c.val_seed) if c.val_background_dir else None)
