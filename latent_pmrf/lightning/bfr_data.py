"""DataModule for restoration training: HQ folders with LQ synthesised on the fly (seeded per
(seed, epoch, index) through ``EpochIndexSampler``); validation LQ fixed per index, or a released
LQ folder paired by name (``data.val_lq_dir``)."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from ..data.bfr_datasets import PairedFolderDataset, PairedOnlineDataset
from ..data.degradations import BFRDegradation
from ..data.samplers import sharded_train_loader
from ..data.task_mix import TaskMixDataset
from .restoration_config import BFRDataConfig, SIRRTaskConfig
from .sirr_data import build_sirr_datasets
from .val_images import validation_shard


class BFRDataModule(L.LightningDataModule):
    """Build the Trainer with ``use_distributed_sampler=False``: the sampler shards ranks itself."""

    def __init__(self, cfg: BFRDataConfig, sirr: SIRRTaskConfig | None = None):
        """``sirr``: a second task whose items are mixed in (``data/task_mix.py``), each tagged
        with its task id (0: the BFR data, 1: SIRR); validation stays on the BFR set."""
        super().__init__()
        if not cfg.train:
            raise ValueError("data.train lists no HQ image folders: add at least one {root: DIR}")
        self.cfg = cfg
        self.sirr = sirr
        self.degradation = BFRDegradation(cfg.degradation)

    def setup(self, stage: str | None = None) -> None:
        c = self.cfg
        self.train_set = PairedOnlineDataset([(s.root, s.limit) for s in c.train], self.degradation, c.crop_size,
                                             seed=c.seed, train=True, on_read_error=c.on_read_error,
                                             small_images=c.small_images, cache=c.cache_images)
        if self.sirr is not None:
            sirr_train, _ = build_sirr_datasets(self.sirr.data)
            self.train_set = TaskMixDataset([self.train_set, sirr_train], [1 - self.sirr.ratio, self.sirr.ratio],
                                            length=len(self.train_set), seed=c.seed)
        if c.val_lq_dir:
            self.val_set = PairedFolderDataset(c.val_lq_dir, c.val_dir, limit=c.val_limit)
        elif c.val_dir:
            self.val_set = PairedOnlineDataset([(c.val_dir, c.val_limit)], self.degradation, c.crop_size, seed=c.seed,
                                               train=False)
        else:
            self.val_set = None

    def train_dataloader(self) -> DataLoader:
        c = self.cfg
        return sharded_train_loader(self.train_set, c.batch_size, c.seed, c.num_workers, self.trainer)

    def val_dataloader(self):
        """This rank's contiguous shard of the validation set (``val_images.validation_shard``)."""
        if self.val_set is None:
            return []
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        shard = validation_shard(self.val_set, rank, world_size)
        return DataLoader(shard, batch_size=self.cfg.val_batch_size, num_workers=self.cfg.num_workers, pin_memory=True)
