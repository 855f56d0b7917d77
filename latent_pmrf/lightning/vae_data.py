"""DataModule for autoencoder training: random crops from image folders, centre-crop validation."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from ..data.image_folder import ImageFolderCenter, ImageFolderCrops
from .vae_config import VAEDataConfig


class VAEDataModule(L.LightningDataModule):
    def __init__(self, cfg: VAEDataConfig):
        super().__init__()
        if not cfg.train:
            raise ValueError("data.train lists no image folders: add at least one {root: DIR}")
        self.cfg = cfg

    def setup(self, stage: str | None = None) -> None:
        c = self.cfg
        self.train_set = ImageFolderCrops([(s.root, s.limit) for s in c.train], c.crop_size, c.hflip, c.repeat,
                                         c.on_read_error)
        self.val_set = ImageFolderCenter(c.val_dir, c.val_crop_size, c.val_limit) if c.val_dir else None

    def _loader(self, dataset, batch_size: int, train: bool) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=True)

    def train_dataloader(self) -> DataLoader:
        if len(self.train_set) < self.cfg.batch_size:
            raise ValueError(f"data.train has {len(self.train_set)} images, fewer than data.batch_size={self.cfg.batch_size}")
        return self._loader(self.train_set, self.cfg.batch_size, train=True)

    def val_dataloader(self):
        return [] if self.val_set is None else self._loader(self.val_set, self.cfg.val_batch_size, train=False)
