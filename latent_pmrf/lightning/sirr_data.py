"""The reflection-removal (SIRR) data of a training run: sources mixed with per-source ratios, the
synthesis, the crops, and the validation pairs, as one config (``SIRRDataConfig``), and the
datasets built from it (``build_sirr_datasets``). Loader settings (batch sizes, workers) belong to
the training task that wraps these datasets.

The defaults are the usual training mix (DSRNet ``train_sirs_4000.py``, RDNet ``train.py``): the
VOC2012 images of ERRNet's list blended on the fly (0.6), Zhang et al.'s 90 real pairs (0.2) and
Nature's 200 pairs (0.2), 4,000 items per epoch, under the layout of ``data_prep/sirr.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from torch.utils.data import Dataset

from ..config import load_config
from ..data.image_folder import check_small_images
from ..data.reflection import ReflectionSynthesis, ReflectionSynthesisConfig, reflection_preset
from ..data.sirr_datasets import (SIRR_TEST_SETS, SIRR_TRAIN_PAIR_SETS, VOC_TRAIN_DIR, MixedSourcesDataset,
                                  ReflectionPairDataset, SIRRAugmentConfig, SyntheticReflectionDataset)
from .trainer_config import ImageSourceConfig, check_on_read_error


@dataclass
class SIRRSourceConfig:
    """One source of the mix: real ``pairs`` (folders with blended/ + transmission_layer/), or
    synthetic pairs from ``background`` images blended with ``reflection`` images (none: reflections
    drawn from the backgrounds, as ERRNet/DSRNet use one VOC list for both). Paths are relative to
    ``data.root`` unless absolute."""

    name: str = "???"
    ratio: float = 0.0
    pairs: list[str] = field(default_factory=list)
    background: list[ImageSourceConfig] = field(default_factory=list)
    reflection: list[ImageSourceConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"data.sources[{self.name}].ratio must be in [0, 1], got {self.ratio}")
        if bool(self.pairs) == bool(self.background):
            raise ValueError(f"data.sources[{self.name}] needs either pairs (real) or background (synthetic), "
                             "not both or neither")
        if self.reflection and not self.background:
            raise ValueError(f"data.sources[{self.name}].reflection needs background images to blend with")

    @property
    def synthetic(self) -> bool:
        return bool(self.background)


def _usual_mix() -> list[SIRRSourceConfig]:
    real, nature = SIRR_TRAIN_PAIR_SETS
    return [SIRRSourceConfig("synthetic", 0.6, background=[ImageSourceConfig(VOC_TRAIN_DIR)]),
            SIRRSourceConfig(real.name, 0.2, pairs=[real.path]),
            SIRRSourceConfig(nature.name, 0.2, pairs=[nature.path])]


@dataclass
class SIRRDataConfig:
    root: str = "data/sirr"  # the layout of data_prep/sirr.py (train/, test/)
    sources: list[SIRRSourceConfig] = field(default_factory=_usual_mix)
    synthesis: ReflectionSynthesisConfig = field(default_factory=lambda: reflection_preset("dsrnet"))
    augment: SIRRAugmentConfig = field(default_factory=SIRRAugmentConfig)
    epoch_length: Optional[int] = 4000  # items per epoch (DSRNet's FusionDataset size); None: all sources' items
    # validation pairs (a test set of SIRR_TEST_SETS keeps its listed names: Real20's 20 of Zhang et al.)
    val: list[str] = field(default_factory=lambda: [SIRR_TEST_SETS[0].path, SIRR_TEST_SETS[-1].path])
    val_limit: Optional[int] = None  # the first N pairs of each val folder
    # centre crop after the floor-32 alignment; None: whole images (of different sizes: batches of 1)
    val_crop_size: Optional[int] = 256
    seed: int = 0  # item (epoch, index) draws from SeedSequence([seed, epoch, index])
    on_read_error: str = "skip"  # training sets; validation always raises
    # a training image (pair) smaller than the crop: "skip" it (counted) or "upscale" it (ImageFiles)
    small_images: str = "skip"
    # keep the decoded training images in memory (float32, in each dataloader worker): for small sets
    cache_images: bool = False

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        if not self.sources or len(set(names)) != len(names):
            raise ValueError(f"data.sources must name at least one source, each once; got {names}")
        total = sum(s.ratio for s in self.sources)
        if abs(total - 1) > 1e-6:
            ratios = ", ".join(f"{s.name}={s.ratio:g}" for s in self.sources)
            raise ValueError(f"data.sources ratios must sum to 1, got {total:g} ({ratios})")
        for name in ("epoch_length", "val_limit", "val_crop_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1 or null, got {getattr(self, name)}")
        check_on_read_error(self.on_read_error)
        check_small_images(self.small_images)

    def path(self, relative: str) -> Path:
        return Path(self.root) / relative


def load_sirr_data_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SIRRDataConfig:
    """``SIRRDataConfig`` from a YAML of its fields (``configs/sirr/``) and ``key=value`` overrides;
    ``synthesis.preset: rdnet`` starts the synthesis from a preset."""
    return load_config(SIRRDataConfig, path, overrides, presets={"synthesis": reflection_preset})


def build_sirr_datasets(cfg: SIRRDataConfig) -> tuple[Dataset, Dataset | None]:
    """(training mix, validation pairs or None). Training items are ``(epoch, index)``-seeded: sample
    them with ``EpochIndexSampler`` (see ``bfr_data.py``)."""
    synthesis = ReflectionSynthesis(cfg.synthesis)
    sources = []
    for source in cfg.sources:
        if source.synthetic:
            sources.append(SyntheticReflectionDataset(
                [(cfg.path(s.root), s.limit) for s in source.background],
                [(cfg.path(s.root), s.limit) for s in source.reflection] or None, synthesis, cfg.augment,
                seed=cfg.seed, train=True, on_read_error=cfg.on_read_error,
                small_images=cfg.small_images, cache=cfg.cache_images))
        else:
            sources.append(ReflectionPairDataset([(cfg.path(p), None, None) for p in source.pairs], cfg.augment,
                                                 seed=cfg.seed, train=True, on_read_error=cfg.on_read_error,
                                                 small_images=cfg.small_images, cache=cfg.cache_images))
    length = cfg.epoch_length or sum(len(s) for s in sources)
    train = MixedSourcesDataset(sources, [s.ratio for s in cfg.sources], length, seed=cfg.seed)
    if not cfg.val:
        return train, None
    listed = {s.path: s.names for s in SIRR_TEST_SETS}
    val = ReflectionPairDataset([(cfg.path(p), listed.get(p), cfg.val_limit) for p in cfg.val],
                                SIRRAugmentConfig(crop_size=cfg.val_crop_size, short_side_range=None),
                                seed=cfg.seed, train=False)
    return train, val
