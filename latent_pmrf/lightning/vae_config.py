"""Configuration of a Sim-VAE training run (paper Sec. 4.1 and Appendix B.2).

Defaults are the paper's: L1 + 0.05 VGG19 perceptual + 1e-6 KL, no GAN, AdamW(1e-4, (0.9, 0.99),
wd 0.01), 500 warm-up steps from 1e-5, cosine to 1e-6, grad clip 1, EMA 0.9999, 256^2 crops with
horizontal flips, global batch 64 = ``data.batch_size`` x ``trainer.devices`` x
``trainer.num_nodes`` x ``trainer.accumulate_grad_batches`` (8 x 8 x 1 x 1 on 8 GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..data.image_folder import check_small_images
from ..models.sim_vae import SimVAEConfig
from .trainer_config import ImageSourceConfig, TrainerConfig, check_on_read_error

@dataclass
class VAEDataConfig:
    train: list[ImageSourceConfig] = field(default_factory=list)
    val_dir: Optional[str] = None
    val_limit: Optional[int] = 16
    crop_size: int = 256
    val_crop_size: int = 256
    hflip: bool = True
    repeat: int = 1  # random crops drawn from each image per epoch (for small folders)
    batch_size: int = 8  # per device
    val_batch_size: int = 4
    num_workers: int = 4
    on_read_error: str = "skip"  # unreadable training image: "skip" (warn, count, use the next) or "raise"
    # a training image smaller than crop_size: "skip" (warn, count in data/skipped_files, use the next)
    # or "upscale" (Lanczos, shorter side to crop_size, aspect kept)
    small_images: str = "skip"
    # keep the decoded training images in memory (float32, in each dataloader worker): for small
    # sets, where decoding a PNG costs more than the training step (the quickstart); results unchanged
    cache_images: bool = False
    seed: int = 0  # of the data order and the crops (item (epoch, index) draws from (seed, epoch, index))

    def __post_init__(self) -> None:
        for name in ("batch_size", "val_batch_size", "repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        check_on_read_error(self.on_read_error)
        check_small_images(self.small_images)
        if self.seed < 0:
            raise ValueError(f"data.seed must be >= 0, got {self.seed}")
        for name in ("crop_size", "val_crop_size"):
            if getattr(self, name) % 8:
                raise ValueError(f"data.{name} must be a multiple of 8 (the VAE's downsampling), got {getattr(self, name)}")


@dataclass
class VAELossConfig:
    l1_weight: float = 1.0
    perceptual_weight: float = 0.05
    # Features before ReLU (Real-ESRGAN weighting).
    perceptual_layers: dict[str, float] = field(
        default_factory=lambda: {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
    )
    vgg_pretrained: bool = True  # False only for tests / smoke runs: an untrained VGG19
    kl_weight: float = 1e-6  # KL summed over latent elements, averaged over the batch
    lpips_weight: float = 0.0  # optional LPIPS(VGG) term, off in the paper
    gan_weight: float = 0.0  # optional PatchGAN hinge term, off in the paper
    gan_start_step: int = 0
    disc_lr: float = 1e-4


@dataclass
class VAEOptimConfig:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 500
    warmup_start_lr: float = 1e-5
    # Cosine length after warm-up. The paper trains 150k steps ending at min_lr; the official
    # sim_vae_c32.yml sets timm's t_initial to 200000 (so it stops before reaching min_lr).
    cosine_steps: int = 150_000
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True


@dataclass
class VAETrainConfig:
    task: str = "vae"
    model: SimVAEConfig = field(default_factory=SimVAEConfig)
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    optim: VAEOptimConfig = field(default_factory=VAEOptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if self.task != "vae":
            raise ValueError(f"task must be 'vae' for a VAE training config, got {self.task!r}")
