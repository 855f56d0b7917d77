"""DataModule for autoencoder training: random crops from image folders (order and crops seeded per
(epoch, index) through ``EpochIndexSampler``, resumable mid-epoch), centre-crop validation."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from ..data.image_folder import ImageFolderCenter, ImageFolderCrops
from ..data.samplers import EpochIndexSampler, ResumableLoader
from .vae_config import VAEDataConfig


class VAEDataModule(L.LightningDataModule):
    """Build the Trainer with ``use_distributed_sampler=False``: the sampler shards ranks itself."""

    seed = 0  # of the data order and the crops; fixed: the VAE config has no data.seed

    def __init__(self, cfg: VAEDataConfig):
        super().__init__()
        if not cfg.train:
            raise ValueError("data.train lists no image folders: add at least one {root: DIR}")
        self.cfg = cfg

    def setup(self, stage: str | None = None) -> None:
        c = self.cfg
        self.train_set = ImageFolderCrops([(s.root, s.limit) for s in c.train], c.crop_size, c.hflip, c.repeat,
                                         c.on_read_error, seed=self.seed)
        self.val_set = ImageFolderCenter(c.val_dir, c.val_crop_size, c.val_limit) if c.val_dir else None

    def train_dataloader(self) -> DataLoader:
        c = self.cfg
        if len(self.train_set) < c.batch_size:
            raise ValueError(f"data.train has {len(self.train_set)} images, fewer than data.batch_size={c.batch_size}")
        trainer = self.trainer
        sampler = EpochIndexSampler(len(self.train_set), shuffle=True, seed=self.seed,
                                    num_replicas=trainer.world_size if trainer else 1,
                                    rank=trainer.global_rank if trainer else 0, drop_last=True)
        return ResumableLoader(self.train_set, sampler=sampler, batch_size=c.batch_size, drop_last=True,
                               num_workers=c.num_workers, persistent_workers=c.num_workers > 0, pin_memory=True)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        workers = self.cfg.num_workers
        return DataLoader(self.val_set, batch_size=self.cfg.val_batch_size, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=True)
