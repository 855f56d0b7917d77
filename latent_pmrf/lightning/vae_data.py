"""DataModule for autoencoder training: random crops from image folders (order and crops seeded per
(epoch, index) through ``EpochIndexSampler``, resumable mid-epoch), centre-crop validation."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from ..data.image_folder import ImageFolderCenter, ImageFolderCrops
from ..data.samplers import sharded_train_loader
from .vae_config import VAEDataConfig
from .val_images import validation_shard


class VAEDataModule(L.LightningDataModule):
    """Build the Trainer with ``use_distributed_sampler=False``: the sampler shards ranks itself."""

    def __init__(self, cfg: VAEDataConfig):
        super().__init__()
        if not cfg.train:
            raise ValueError("data.train lists no image folders: add at least one {root: DIR}")
        self.cfg = cfg
        self.seed = cfg.seed  # of the data order and the crops

    def setup(self, stage: str | None = None) -> None:
        c = self.cfg
        self.train_set = ImageFolderCrops([(s.root, s.limit) for s in c.train], c.crop_size, c.hflip, c.repeat,
                                         c.on_read_error, seed=self.seed, small_images=c.small_images, cache=c.cache_images)
        self.val_set = ImageFolderCenter(c.val_dir, c.val_crop_size, c.val_limit) if c.val_dir else None

    def train_dataloader(self) -> DataLoader:
        c = self.cfg
        return sharded_train_loader(self.train_set, c.batch_size, self.seed, c.num_workers, self.trainer)

    def val_dataloader(self):
        """This rank's contiguous shard of the validation crops (``val_images.validation_shard``)."""
        if self.val_set is None:
            return []
        trainer = self.trainer
        shard = validation_shard(self.val_set, *((trainer.global_rank, trainer.world_size) if trainer else (0, 1)))
        workers = self.cfg.num_workers
        return DataLoader(shard, batch_size=self.cfg.val_batch_size, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=True)
