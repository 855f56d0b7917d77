"""Configs of the restoration tasks: the posterior-mean estimator and the (latent or pixel) flow.

Defaults are the paper's (Sec. 4.1) and PMRF's: FFHQ-512 with the DifFace degradation, HDiT,
AdamW lr 5e-4, betas (0.9, 0.95), weight decay 1e-2, constant lr, EMA 0.9999, bf16-mixed,
400k steps at global batch 64 (= data.batch_size × devices × num_nodes × accumulation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..data.degradations import DegradationConfig, degradation_preset
from ..data.image_folder import check_small_images
from ..models.hdit import HDiTConfig
from ..models.looformer import LooUFormerConfig
from ..models.velocity import VELOCITY_FAMILIES, velocity_config_class, velocity_preset
from ..models.swinir import SwinIRConfig
from .sirr_data import SIRRDataConfig
from .trainer_config import ImageSourceConfig, TrainerConfig, check_on_read_error


@dataclass
class BFRDataConfig:
    train: list[ImageSourceConfig] = field(default_factory=list)  # HQ folders; LQ synthesised on the fly
    val_dir: Optional[str] = None  # HQ folder; its LQ is fixed by (seed, index)
    # Released LQ images (e.g. CelebA-Test's lq/), paired with val_dir by relative path without
    # suffix and used as they are (no crop); None: synthesise the LQ with `degradation`.
    val_lq_dir: Optional[str] = None
    val_limit: Optional[int] = 16
    crop_size: Optional[int] = None  # None: whole images (FFHQ-512 is already 512²)
    degradation: DegradationConfig = field(default_factory=lambda: degradation_preset("difface"))
    seed: int = 0
    batch_size: int = 8  # per device
    val_batch_size: int = 4
    num_workers: int = 8
    on_read_error: str = "skip"
    # a training image smaller than crop_size: "skip" (warn, count in data/skipped_files, use the next)
    # or "upscale" (Lanczos, shorter side to crop_size, aspect kept)
    small_images: str = "skip"
    # keep the decoded training images in memory (float32, in each dataloader worker): for small
    # sets, where decoding a PNG costs more than the training step (the quickstart); results unchanged
    cache_images: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "val_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("crop_size", "val_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1 or null, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.val_lq_dir and not self.val_dir:
            raise ValueError("data.val_lq_dir needs data.val_dir (the ground truth it is paired with)")
        check_on_read_error(self.on_read_error)
        check_small_images(self.small_images)


@dataclass
class RestorationOptimConfig:
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 1e-2
    eps: float = 1e-8
    grad_clip: Optional[float] = None
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # PMRF's torch_ema: constant decay


@dataclass
class PosteriorMeanTrainConfig:
    """f(y) ≈ E[x|y] (Sec. 2.2 step 1): SwinIR trained with L1 (DifFace's released model) or MSE."""

    task: str = "posterior_mean"
    model: SwinIRConfig = field(default_factory=SwinIRConfig)
    init_checkpoint: Optional[str] = None  # start from e.g. DifFace's swinir_restoration512_L1.pth
    loss: str = "l1"  # "l1" | "mse"
    data: BFRDataConfig = field(default_factory=BFRDataConfig)
    optim: RestorationOptimConfig = field(default_factory=lambda: RestorationOptimConfig(
        lr=1e-4, betas=[0.9, 0.99], weight_decay=0.0))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(output_dir="runs/posterior_mean"))

    def __post_init__(self) -> None:
        if self.task != "posterior_mean":
            raise ValueError(f"task must be 'posterior_mean', got {self.task!r}")
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {self.loss!r}")


@dataclass
class PosteriorMeanSource:
    """The frozen f(y): a posterior_mean training checkpoint (``.ckpt``), DifFace's ``.pth``, or
    null for DifFace's file from ``$TORCH_HOME/hub/checkpoints``."""

    checkpoint: Optional[str] = None
    model: SwinIRConfig = field(default_factory=SwinIRConfig)


@dataclass
class ConvergenceConfig:
    """Convergence curves during flow training (paper Fig. 1 and 3, Sec. 4.2): every
    ``every_n_steps`` optimizer steps (0 = off) the fixed validation set is restored with the EMA
    weights and ``metrics`` are computed against its ground truth."""

    every_n_steps: int = 0
    metrics: list[str] = field(default_factory=lambda: ["fid", "dists", "mmd_dinov2",  # Fig. 1 and 3 curves
                                                        "lpips_alex", "musiq", "clipiqa"])
    num_images: Optional[int] = None  # the first N images of data.val_dir (not data.val_limit); None = all
    euler_steps: int = 25
    seed: int = 0  # image i uses a generator seeded by (seed, i): the same noise at every point
    skip_missing: bool = True  # a metric without its weights is skipped with a warning

    def __post_init__(self) -> None:
        from ..metrics.registry import METRICS

        if self.every_n_steps < 0:
            raise ValueError(f"convergence.every_n_steps must be >= 0 (0 = off), got {self.every_n_steps}")
        if self.euler_steps < 1:
            raise ValueError(f"convergence.euler_steps must be >= 1, got {self.euler_steps}")
        if self.num_images is not None and self.num_images < 1:
            raise ValueError(f"convergence.num_images must be >= 1 or null, got {self.num_images}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"convergence.metrics: unknown {unknown or 'empty list'}; known: {', '.join(METRICS)}")


@dataclass
class SIRRTaskConfig:
    """Reflection removal as a second task of one flow model (GenSIRR on latent PMRF): its data
    (``sirr_data.SIRRDataConfig``), the share of training items it gets, and its posterior-mean
    estimator (null: none, the flow starts from the blended image itself)."""

    data: SIRRDataConfig = field(default_factory=SIRRDataConfig)
    ratio: float = 0.5  # fraction of training items drawn from this task (the rest: the BFR data)
    posterior_mean: Optional[PosteriorMeanSource] = None

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"sirr.ratio must be in (0, 1), got {self.ratio}")


@dataclass
class FlowTrainConfig:
    """Latent-PMRF (``space: latent``) or PMRF (``space: pixel``) rectified flow (Sec. 3.1)."""

    task: str = "flow"
    space: str = "latent"  # "latent" | "pixel"
    # latent space: a Sim-VAE or diffusers AutoencoderKL directory, an HF repo id, or sd15|sdxl|flux|sd3
    vae: Optional[str] = None
    vae_sample_posterior: bool = True  # encode with a posterior sample, as the official pipeline
    posterior_mean: PosteriorMeanSource = field(default_factory=PosteriorMeanSource)
    # σ_s: 0.1 in the official run ("std0dot1"), in the raw Sim-VAE c32 latent (its release has
    # no scaling/shift factors); pixel PMRF uses 0.1 on [0, 1] images, i.e. 0.2 on our [-1, 1]
    # images (configs/pmrf/pixel_ffhq512.yaml).
    source_noise_std: float = 0.1
    # The velocity net: any family of models/velocity.py, chosen by `model.preset` (default: the
    # official release's LooUFormer, Table 4's 151.2 M; `hdit_latent_pmrf` is k-diffusion's HDiT).
    model: Any = field(default_factory=lambda: velocity_preset("latent_pmrf_official"))
    val_euler_steps: int = 50  # Euler steps for validation samples (25 at inference)
    # Euler time grid of validation, convergence and `restore` (flow/sampler.py): "uniform" (PMRF)
    # or "flow_match_euler" (the official Latent-PMRF pipeline's diffusers scheduler).
    sampler: str = "uniform"
    task_name: str = "bfr"  # what `data` trains (restore --task NAME)
    # a second task (GenSIRR): the velocity net gets a task embedding for [task_name, "sirr"]
    sirr: Optional[SIRRTaskConfig] = None
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)
    data: BFRDataConfig = field(default_factory=BFRDataConfig)
    optim: RestorationOptimConfig = field(default_factory=RestorationOptimConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        output_dir="runs/latent_pmrf", max_steps=400_000, precision="bf16-mixed"))

    @classmethod
    def defaults_for(cls, data: dict) -> FlowTrainConfig:
        """Defaults whose ``model`` is of the family named in ``data`` (a stored config), so that
        ``config.from_dict`` can merge a LooUFormer or an HDiT config onto them."""
        family = (data.get("model") or {}).get("family", "hdit")
        presets = VELOCITY_FAMILIES[family].presets if family in VELOCITY_FAMILIES else {}
        if not presets:
            velocity_config_class(family)  # raises, naming the families
        return cls(model=velocity_preset(next(iter(presets))))

    def __post_init__(self) -> None:
        if self.task != "flow":
            raise ValueError(f"task must be 'flow', got {self.task!r}")
        if self.space not in ("latent", "pixel"):
            raise ValueError(f"space must be 'latent' or 'pixel', got {self.space!r}")
        if not isinstance(self.model, (HDiTConfig, LooUFormerConfig)):
            raise ValueError(f"model must be a velocity-model config (HDiT or LooUFormer), got {type(self.model).__name__}")
        tasks = [self.task_name, "sirr"] if self.sirr is not None else []
        embedded = list(self.model.task_embedding.tasks)
        if tasks and not embedded:
            self.model.task_embedding.tasks = tasks  # the embedding follows the tasks the data names
        elif embedded != tasks and (tasks or len(embedded) > 1):
            raise ValueError(f"model.task_embedding.tasks is {embedded} but the data trains {tasks or [self.task_name]}")
        from ..flow.sampler import SCHEDULES

        if self.sampler not in SCHEDULES:
            raise ValueError(f"sampler must be one of {SCHEDULES}, got {self.sampler!r}")
