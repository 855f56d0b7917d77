"""Configuration of a reflection-equivariant VAE fine-tuning run (GenSIRR Stage I, re-VAE).

Starts from a Sim-VAE snapshot (``vae``), trains a rank-8 LoRA on its encoder (or the named
submodules in full) with L_recon + λ·L_equiv (``losses/equivariance.py``) on α-mixtures of random
crops. GenSIRR's Stage I: rank 8, AdamW lr 1e-4, 30k iterations, global batch 128 on PD-12M; the
other defaults (no warm-up, constant lr, weight decay 0.01 and LPIPS-Alex from the official
``vae_training/train.py``, no EMA) are ours or the release's, as marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..data.image_folder import check_small_images
from ..losses.equivariance import ReVAELossConfig
from ..models.lora import LoRAConfig
from .trainer_config import ImageSourceConfig, TrainerConfig, check_on_read_error

PAIRINGS = ("sets", "permute")
FINETUNE_METHODS = ("lora", "full")


@dataclass
class ReVAEDataConfig:
    # "sets": background i with a random reflection crop from `reflection`; "permute": the images of
    # `background` mixed with a shifted copy of their own batch (the official code's in-batch pairing).
    pairing: str = "sets"
    background: list[ImageSourceConfig] = field(default_factory=list)
    reflection: list[ImageSourceConfig] = field(default_factory=list)  # empty with pairing "permute"
    crop_size: int = 256
    hflip: bool = True
    repeat: int = 1  # random crops drawn from each background image per epoch (for small folders)
    batch_size: int = 8  # per device: mixtures per step (each needs a background and a reflection)
    num_workers: int = 4
    on_read_error: str = "skip"
    # a training image smaller than crop_size: "skip" (warn, count in data/skipped_files, use the next)
    # or "upscale" (Lanczos, shorter side to crop_size, aspect kept)
    small_images: str = "skip"
    # keep the decoded training images in memory (float32, in each dataloader worker): for small
    # sets, where decoding a PNG costs more than the training step (the quickstart); results unchanged
    cache_images: bool = False
    seed: int = 0  # of the data order, the crops and the reflection drawn for each background
    # Held-out mixtures for validation: centre crops, pair i and its α fixed by (val_seed, i).
    val_background_dir: Optional[str] = None
    val_reflection_dir: Optional[str] = None  # None: reflections from val_background_dir (never the same image)
    val_limit: int = 16  # number of held-out mixtures
    val_crop_size: int = 256
    val_seed: int = 0
    val_batch_size: int = 4

    def __post_init__(self) -> None:
        if self.pairing not in PAIRINGS:
            raise ValueError(f"data.pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        if self.pairing == "permute" and self.reflection:
            raise ValueError("data.reflection must be empty with data.pairing=permute (the batch is mixed with itself)")
        if self.pairing == "permute" and self.batch_size < 2:
            raise ValueError("data.pairing=permute needs data.batch_size >= 2 (an image is never mixed with itself)")
        for name in ("batch_size", "val_batch_size", "repeat", "val_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.val_reflection_dir and not self.val_background_dir:
            raise ValueError("data.val_reflection_dir needs data.val_background_dir")
        check_on_read_error(self.on_read_error)
        check_small_images(self.small_images)


@dataclass
class ReVAEOptimConfig:
    lr: float = 1e-4  # GenSIRR Stage I (AdamW)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # torch's AdamW default, as the release
    weight_decay: float = 0.01  # the release's train.py
    eps: float = 1e-8
    warmup_steps: int = 0  # linear warm-up from 0 (ours; none in the release)
    cosine_steps: Optional[int] = None  # None: constant lr after warm-up; N: cosine to min_lr over N steps
    min_lr: float = 0.0
    grad_clip: Optional[float] = 1.0  # ours (the release clips nothing)
    ema_decay: Optional[float] = None  # None: no EMA (GenSIRR keeps none)
    ema_warmup: bool = True

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or (self.cosine_steps is not None and self.cosine_steps < 1):
            raise ValueError(f"optim.warmup_steps must be >= 0 and optim.cosine_steps >= 1 or null, got "
                             f"{self.warmup_steps} and {self.cosine_steps}")


@dataclass
class ReVAETrainConfig:
    task: str = "re_vae"
    vae: str = "???"  # Sim-VAE snapshot directory (or Hugging Face repo id) to start from
    finetune: str = "lora"  # "lora" (GenSIRR Stage I) | "full" (the release's train.py trains the whole VAE)
    modules: list[str] = field(default_factory=lambda: ["encoder"])  # adapted (lora) or trained (full)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    loss: ReVAELossConfig = field(default_factory=ReVAELossConfig)
    data: ReVAEDataConfig = field(default_factory=ReVAEDataConfig)
    optim: ReVAEOptimConfig = field(default_factory=ReVAEOptimConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(output_dir="runs/re_vae", max_steps=30_000))

    def __post_init__(self) -> None:
        if self.task != "re_vae":
            raise ValueError(f"task must be 're_vae' for a re-VAE fine-tuning config, got {self.task!r}")
        if self.finetune not in FINETUNE_METHODS:
            raise ValueError(f"finetune must be one of {FINETUNE_METHODS}, got {self.finetune!r}")
        if not self.modules:
            raise ValueError("modules lists no submodule to fine-tune (e.g. [encoder])")

    @property
    def lora_or_none(self) -> LoRAConfig | None:
        """The adapter config when fine-tuning with LoRA, None for full fine-tuning."""
        return self.lora if self.finetune == "lora" else None
