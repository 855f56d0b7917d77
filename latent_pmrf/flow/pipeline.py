"""The restoration pipeline: posterior-mean estimator f, the flow's space (a VAE, or pixels) and the
velocity net v_θ, as one pure ``nn.Module`` that training, ``restore`` and ``evaluate`` share.

Restoration (paper Fig. 2, Sec. 3.1): Z0 = space(clip(f(y), -1, 1)) + σ_s·ε, K Euler steps of
dx/dt = v_θ(x, t) from t = 0 to 1, then x̂ = space⁻¹(X1). The frozen f and VAE run in float32 even
inside a bf16 autocast region (their outputs are the flow's source and target).

Files: ``save_pretrained(DIR)`` writes ``config.json`` (the architecture) and
``model.safetensors`` (all weights); ``from_pretrained(DIR)`` reads them back;
``from_checkpoint(PATH)`` reads a flow training checkpoint (``weights_only``, no Lightning needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write, write_text_atomic
from ..config import to_dict
from ..models.autoencoder import autoencoder_config, autoencoder_from_config
from ..models.pmrf_import import DOWNLOAD_HINT, UnitRangeVelocity, load_pmrf_release
from ..models.state_dict import load_strict
from ..models.swinir import SwinIR, SwinIRConfig
from ..models.velocity import VELOCITY_FAMILIES, build_velocity
from .sampler import SCHEDULES, sample_euler
from .spaces import LatentSpace, PixelSpace, source_sample

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "latent-pmrf-pipeline"
FORMAT_VERSION = 1
CHECKPOINT_PREFIX = "pipeline."  # the pipeline's keys inside a FlowModule checkpoint's state_dict
EXPECTED = ("a flow training checkpoint (.ckpt of `latent-pmrf train` with a configs/latent_pmrf or configs/pmrf "
            f"config), a pipeline folder ({CONFIG_NAME} + {WEIGHTS_NAME} of save_pretrained) or PMRF's released "
            "model (its folder or model.safetensors)")


class IdentityPosteriorMean(nn.Module):
    """f(y) = y: the flow starts from the degraded input itself (a task without a posterior-mean
    estimator, e.g. SIRR, where GenSIRR's latent flow starts from the blended image)."""

    config = None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y


class RestorationPipeline(nn.Module):
    """``tasks`` names what the pipeline restores (default one: ``["bfr"]``). A multi-task pipeline
    (a velocity net with a task embedding for the same tasks) takes one posterior-mean estimator per
    task, ``{task: module or None}`` (None: ``IdentityPosteriorMean``)."""

    def __init__(self, posterior_mean: nn.Module | dict[str, nn.Module | None], velocity: nn.Module,
                 vae: nn.Module | None = None, source_noise_std: float = 0.1, sampler: str = "uniform",
                 vae_sample_posterior: bool = True, tasks: list[str] | None = None):
        super().__init__()
        if sampler not in SCHEDULES:
            raise ValueError(f"sampler must be one of {SCHEDULES}, got {sampler!r}")
        embedded = list(getattr(velocity.config, "task_embedding", None) and velocity.config.task_embedding.tasks or [])
        self.tasks = list(tasks or embedded or ["bfr"])
        if embedded and embedded != self.tasks:
            raise ValueError(f"tasks {self.tasks} differ from the velocity net's task embedding {embedded}")
        if len(self.tasks) > 1 and not embedded:
            raise ValueError(f"{len(self.tasks)} tasks need a velocity net with a task embedding for {self.tasks}")
        if isinstance(posterior_mean, dict):
            if sorted(posterior_mean) != sorted(self.tasks):
                raise ValueError(f"posterior-mean estimators for {sorted(posterior_mean)}, tasks are {self.tasks}")
            posterior_mean = nn.ModuleDict({task: posterior_mean[task] or IdentityPosteriorMean()
                                            for task in self.tasks})
        elif len(self.tasks) > 1:
            raise ValueError(f"a multi-task pipeline ({self.tasks}) takes one posterior-mean estimator per task")
        elif embedded:  # a task-embedded net trained on one task
            posterior_mean = nn.ModuleDict({self.tasks[0]: posterior_mean})
        self.posterior_mean = posterior_mean.eval().requires_grad_(False)
        self.space = LatentSpace(vae, vae_sample_posterior) if vae is not None else PixelSpace()
        self.velocity = velocity
        self.source_noise_std = source_noise_std
        self.sampler = sampler
        channels = vae.latent_channels if vae is not None else 3
        cfg = velocity.config
        if (cfg.in_channels, cfg.out_channels) != (channels, channels):
            where = "the VAE's latent channels" if vae is not None else "RGB, pixel space"
            raise ValueError(f"velocity net in/out channels are {cfg.in_channels}/{cfg.out_channels}, "
                             f"expected {channels} ({where})")

    @property
    def vae(self) -> nn.Module | None:
        return getattr(self.space, "vae", None)

    @property
    def min_side(self) -> int:
        """The smallest image side the velocity net takes: each neighbourhood-attention level needs a
        token map at least as wide as its kernel (a multiple of ``size_multiple``)."""
        cfg = self.velocity.config
        tokens = max([1] + [lvl.kernel_size * 2**i for i, lvl in enumerate(cfg.levels) if lvl.attention == "neighborhood"])
        side = tokens * cfg.patch_size * self.space.scale_factor
        return -(-side // self.size_multiple) * self.size_multiple

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (VAE downsampling × velocity net patch/merges)."""
        return self.space.scale_factor * self.velocity.config.multiple

    def compile_nets(self, **options) -> RestorationPipeline:
        """``torch.compile`` the velocity net, the VAE and the posterior-mean estimator(s) in place
        (``models/compile.py``): same weights, outputs equal to float rounding, faster from the
        second image of a size on (the first compiles). ``restore --compile``."""
        from ..models.compile import compile_module

        estimators = self.posterior_mean.values() if isinstance(self.posterior_mean, nn.ModuleDict) else [self.posterior_mean]
        for net in [self.velocity, self.vae, *estimators]:
            if net is not None and not isinstance(net, IdentityPosteriorMean):
                compile_module(net, **options)
        return self

    def train(self, mode: bool = True) -> RestorationPipeline:
        super().train(mode)
        self.posterior_mean.eval()  # frozen: no dropout / drop-path
        return self

    def full_precision(self) -> torch.autocast:
        """The frozen f(y) and VAE run in float32 even inside a bf16 autocast region."""
        return torch.autocast(self.source_device.type, enabled=False)

    @property
    def source_device(self) -> torch.device:
        return next(self.velocity.parameters()).device

    @property
    def multi_task(self) -> bool:
        return isinstance(self.posterior_mean, nn.ModuleDict)

    def task_id(self, task: str | None) -> int | None:
        """The velocity net's id of ``task`` (None for a single-task pipeline); a task this pipeline
        was not trained for is an error naming the ones it knows."""
        if task is not None and task not in self.tasks:
            raise ValueError(f"unknown task {task!r}: this model restores {self.tasks}")
        if not self.multi_task:
            return None
        return self.tasks.index(task or self.tasks[0])

    def velocity_for(self, task_ids: torch.Tensor | int | None):
        """v(x, t) bound to the task ids (one, or one per image, repeated for stacked branches)."""
        if task_ids is None:
            return self.velocity

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            ids = torch.as_tensor(task_ids, device=x.device).reshape(-1)
            return self.velocity(x, t, task=ids if ids.numel() == 1 else ids.repeat(x.shape[0] // ids.numel()))

        return velocity

    def posterior_means(self, lq: torch.Tensor, task_ids: torch.Tensor | int | None = None) -> torch.Tensor:
        """f(y) of each image, by its task's estimator for a multi-task pipeline."""
        if not self.multi_task:
            return self.posterior_mean(lq)
        ids = torch.as_tensor(task_ids if task_ids is not None else 0).reshape(-1).expand(lq.shape[0])
        out = torch.empty_like(lq)
        for task_id in ids.unique().tolist():
            rows = (ids == task_id).nonzero().flatten().to(lq.device)
            out[rows] = self.posterior_mean[self.tasks[task_id]](lq[rows]).to(out.dtype)
        return out

    @torch.no_grad()
    def source(self, lq: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None,
               task_ids: torch.Tensor | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z0, f(y)): Z0 = space(clip(f(y), -1, 1)) + σ_s·ε; with one generator per image, an
        image's draw does not depend on its batch."""
        with self.full_precision():
            posterior_mean = self.posterior_means(lq.float(), task_ids).clamp(-1, 1)
            sigma = self.source_noise_std
            if isinstance(generator, (list, tuple)):
                x0 = torch.cat([source_sample(self.space, posterior_mean[i : i + 1], sigma, generator=g)
                                for i, g in enumerate(generator)])
            else:
                x0 = source_sample(self.space, posterior_mean, sigma, generator=generator)
        return x0, posterior_mean

    @torch.no_grad()
    def flow_endpoints(self, lq: torch.Tensor, gt: torch.Tensor, task_ids: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z0, X1) of a training pair (Fig. 2), in float32."""
        x0, _ = self.source(lq, task_ids=task_ids)
        with self.full_precision():
            return x0, self.space.encode(gt.float())

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, steps: int = 25,
                generator: torch.Generator | list[torch.Generator] | None = None,
                sampler: str | None = None, task: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(restored, posterior mean), both in [-1, 1]; sides must be multiples of ``size_multiple``.
        ``sampler``: the Euler time grid (default: the pipeline's); ``task``: one of ``tasks``
        (default: the first)."""
        task_id = self.task_id(task)
        x0, posterior_mean = self.source(lq, generator, task_id)
        x1 = sample_euler(self.velocity_for(task_id), x0, steps, schedule=sampler or self.sampler)
        with self.full_precision():
            return self.space.decode(x1.float()).clamp(-1, 1), posterior_mean

    # ------------------------------------------------------------------ files
    def config_dict(self) -> dict:
        """The architecture (no weights): what ``from_config_dict`` rebuilds."""
        velocity = self.velocity.net if isinstance(self.velocity, UnitRangeVelocity) else self.velocity
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "source_noise_std": self.source_noise_std,
                "sampler": self.sampler, "vae_sample_posterior": getattr(self.space, "sample_posterior", True),
                "tasks": self.tasks,
                "posterior_mean": ({task: None if m.config is None else to_dict(m.config)
                                    for task, m in self.posterior_mean.items()} if self.multi_task
                                   else to_dict(self.posterior_mean.config)),
                "velocity": to_dict(velocity.config),
                "velocity_unit_range": isinstance(self.velocity, UnitRangeVelocity),
                "vae": autoencoder_config(self.vae) if self.vae is not None else None}

    @classmethod
    def from_config_dict(cls, raw: dict, source: str = "pipeline config") -> RestorationPipeline:
        """An untrained pipeline of the architecture ``config_dict`` wrote; the caller loads weights."""
        if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: not a {FORMAT} config of version {FORMAT_VERSION} "
                             f"(found format {raw.get('format')!r}, version {raw.get('format_version')!r})")
        try:
            family = raw["velocity"].get("family", "hdit")
            if family not in VELOCITY_FAMILIES:
                raise ValueError(f"unknown velocity-model family {family!r}")
            velocity = build_velocity(VELOCITY_FAMILIES[family].config(**raw["velocity"]))
            if raw.get("velocity_unit_range"):
                velocity = UnitRangeVelocity(velocity)
            vae = autoencoder_from_config(raw["vae"], f"{source}: vae") if raw.get("vae") else None
            tasks = raw.get("tasks") or ["bfr"]
            stored = raw["posterior_mean"]
            per_task = isinstance(stored, dict) and set(stored) == set(tasks)
            posterior_mean = ({task: None if stored[task] is None else SwinIR(SwinIRConfig(**stored[task]))
                               for task in tasks} if per_task else SwinIR(SwinIRConfig(**stored)))
            return cls(posterior_mean, velocity, vae, source_noise_std=float(raw["source_noise_std"]),
                       sampler=raw["sampler"], vae_sample_posterior=bool(raw["vae_sample_posterior"]), tasks=tasks)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: cannot rebuild the pipeline: {err}") from err

    def save_pretrained(self, folder: str | Path) -> Path:
        """``folder/config.json`` + ``folder/model.safetensors`` (atomic writes)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp)))
        write_text_atomic(folder / CONFIG_NAME, json.dumps(self.config_dict(), indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> RestorationPipeline:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: a pipeline folder holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                                        "(written by RestorationPipeline.save_pretrained)")
        try:
            raw = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path}: not valid JSON: {err}") from err
        pipeline = cls.from_config_dict(raw, str(config_path))
        try:
            state = load_file(str(weights_path), device=str(map_location))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{weights_path}: not a readable safetensors file: {err}") from err
        load_strict(pipeline, state, str(weights_path))
        return pipeline.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> RestorationPipeline:
        """A flow training checkpoint's pipeline (EMA velocity weights, frozen nets included), read
        with ``torch.load(weights_only=True)``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"flow checkpoint not found: {path}")
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # pickle / zip errors of every kind: the file is not a checkpoint
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({torch_load_problem(path, err)}); "
                             f"expected {EXPECTED}") from err
        hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
        if "pipeline" not in hp:
            config = hp.get("config") if isinstance(hp, dict) else None
            task = config.get("task") if isinstance(config, dict) else None
            if "frozen_configs" in hp:
                found = ("written by an older latent-pmrf whose flow checkpoints stored frozen_configs; retrain, or "
                         "restore with that version")
            elif task is not None:
                found = f"it is a {task} checkpoint" + (
                    ": `latent-pmrf export-vae` turns it into a VAE folder for reconstruct --vae" if task == "vae"
                    else "")
            else:
                found = f"no hyper_parameters.pipeline, it holds {sorted(hp)[:5] if isinstance(hp, dict) else hp}"
            raise ValueError(f"{path}: not a latent-pmrf flow checkpoint ({found}); expected {EXPECTED}")
        pipeline = cls.from_config_dict(hp["pipeline"], f"{path}: hyper_parameters.pipeline")
        state = {k[len(CHECKPOINT_PREFIX):]: v for k, v in ckpt.get("state_dict", {}).items()
                 if k.startswith(CHECKPOINT_PREFIX)}
        load_strict(pipeline, state, str(path))
        return pipeline.eval()

    @classmethod
    def from_pmrf_release(cls, path: str | Path | None = None, **configs) -> RestorationPipeline:
        """PMRF's released blind-face model (Table 4's "PMRF" row) in pixel space: its HDiT behind
        the [0, 1] -> [-1, 1] velocity conversion, DifFace's SwinIR, σ_s = 0.2, uniform Euler steps
        (PMRF's sampler). ``configs``: ``velocity_config`` / ``posterior_mean_config`` of
        ``load_pmrf_release`` (tests use tiny ones)."""
        release = load_pmrf_release(path, **configs)
        return cls(release.posterior_mean, release.velocity, None,
                   source_noise_std=release.source_noise_std, sampler="uniform").eval()

    # ------------------------------------------------------------------ early branching (GenSIRR's DEBS)
    @torch.no_grad()
    def restore_early_branching(self, lq: torch.Tensor, scorer, branches: int = 4, steps: int = 25,
                                branch_steps: int = 1, generator: torch.Generator | list[torch.Generator] | None = None,
                                sampler: str | None = None, task: str | None = None
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``restore`` with early-branching selection (``early_branching.py``): ``branches`` draws of
        Z0 per image (the first is ``restore``'s, the others the generators' next draws, all from one
        f(y)), ``branch_steps`` Euler steps of all of them as one batch, then each image goes on with
        the draw whose one-step end point, decoded to [0, 1], ``scorer`` rates highest ((B, 3, H, W)
        -> (B,), higher is better; ``scorers.build_scorer``). One branch gives ``restore``'s output.
        Returns (restored, posterior mean, chosen draw (B,))."""
        from .early_branching import sample_early_branching

        task_id = self.task_id(task)
        x0, posterior_mean = self.source(lq, generator, task_id)
        pairs = (list(zip(posterior_mean.split(1), generator)) if isinstance(generator, (list, tuple))
                 else [(posterior_mean, generator)])
        with self.full_precision():
            sources = [x0, *(torch.cat([source_sample(self.space, mean, self.source_noise_std, generator=g)
                                        for mean, g in pairs]) for _ in range(branches - 1))]

        def decode(x1_hat: torch.Tensor) -> torch.Tensor:  # flow space -> [0, 1] images, what scorers read
            with self.full_precision():
                return (self.space.decode(x1_hat.float()).clamp(-1, 1) + 1) / 2

        x1, chosen = sample_early_branching(self.velocity_for(task_id), sources, steps, scorer, branch_steps,
                                            sampler or self.sampler, decode, return_indices=True)
        with self.full_precision():
            return self.space.decode(x1.float()).clamp(-1, 1), posterior_mean, chosen


def load_restoration(path: str | Path) -> RestorationPipeline:
    """What ``restore`` takes: a flow training checkpoint (``.ckpt``), a pipeline folder
    (``save_pretrained``), or PMRF's released model (its folder or ``model.safetensors``). Anything
    else is one error naming the path and what was expected."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; expected {EXPECTED} (PMRF's model: {DOWNLOAD_HINT})")
    if path.suffix == ".ckpt" or path.is_file() and path.suffix != ".safetensors":
        return RestorationPipeline.from_checkpoint(path)
    if path.is_dir() and not (path / CONFIG_NAME).is_file() and not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{path} holds neither {CONFIG_NAME} nor {WEIGHTS_NAME}; expected {EXPECTED} "
                                f"(PMRF's model: {DOWNLOAD_HINT})")
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        try:
            raw = json.loads((path / CONFIG_NAME).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path / CONFIG_NAME}: not valid JSON ({err}); expected {EXPECTED}") from err
        if isinstance(raw, dict) and raw.get("format") == FORMAT:
            return RestorationPipeline.from_pretrained(path)
        if isinstance(raw, dict) and "_class_name" in raw:  # a diffusers-style model: a VAE, a UNet, ...
            raise ValueError(f"{path} holds a {raw['_class_name']} ({CONFIG_NAME}), not a restoration model; "
                             f"expected {EXPECTED}")
    return RestorationPipeline.from_pmrf_release(path)


def torch_load_problem(path: Path, err: Exception) -> str:
    """Why ``torch.load`` could not read ``path``, in one line: what the file starts with when it is
    neither the zip archive ``torch.save`` writes nor a legacy pickle, else the loader's reason (of a
    weights-only refusal, the part after its boilerplate)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "the file is empty"
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        return f"the file starts with {head!r}, not with a zip or pickle header"
    reason = str(err).split("WeightsUnpickler error:", 1)[-1].split("Check the documentation of torch.load", 1)[0]
    return f"{type(err).__name__}: {' '.join(reason.split())}"
