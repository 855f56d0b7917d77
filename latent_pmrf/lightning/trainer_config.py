"""Config pieces every training task shares: the Trainer's settings and image-folder sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
READ_ERROR_POLICIES = ("skip", "raise")


def check_on_read_error(value: str) -> None:
    if value not in READ_ERROR_POLICIES:
        raise ValueError(f"data.on_read_error must be one of {READ_ERROR_POLICIES}, got {value!r}")


@dataclass
class ImageSourceConfig:
    root: str = "???"
    limit: Optional[int] = None  # first N images in sorted order (FFHQ: 10000)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data.train[].limit must be >= 1 or null, got {self.limit}")


@dataclass
class TrainerConfig:
    output_dir: str = "runs/sim_vae"
    max_steps: int = 150_000
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning picks DDP when devices x num_nodes > 1
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    val_every_n_steps: int = 2000  # 0 = no validation
    checkpoint_every_n_steps: int = 2000
    log_every_n_steps: int = 50
    seed: int = 0
    resume: bool = True  # continue from output_dir/checkpoints/last.ckpt when it exists
    progress_bar: bool = True
    on_nonfinite: str = "stop"  # a NaN/inf gradient: "stop" the run, or "skip" the step (guards.py)
    max_consecutive_skips: int = 10  # with "skip": stop after this many in a row
    # torch.compile the trained network in place (models/compile.py); checkpoints are unchanged, so
    # a run may be resumed with or without it. benchmarks/train_step.py measures the speed-up.
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("max_steps", "num_nodes", "accumulate_grad_batches", "checkpoint_every_n_steps",
                     "log_every_n_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.val_every_n_steps < 0:
            raise ValueError(f"trainer.val_every_n_steps must be >= 0 (0 = no validation), got {self.val_every_n_steps}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"trainer.on_nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}")
        if self.max_consecutive_skips < 1:
            raise ValueError(f"trainer.max_consecutive_skips must be >= 1, got {self.max_consecutive_skips}")
        if self.seed < 0:
            raise ValueError(f"trainer.seed must be >= 0, got {self.seed}")
        devices_ok = (self.devices == "auto" or (isinstance(self.devices, int) and self.devices >= 1)
                      or (isinstance(self.devices, (list, tuple)) and len(self.devices) > 0))
        if not devices_ok:
            raise ValueError(f"trainer.devices must be 'auto', a count >= 1 or a list of device ids, got {self.devices!r}")
