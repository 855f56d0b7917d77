"""The training tasks, one entry each: config schema, presets, up-front checks and builders.

``latent-pmrf train``, the quickstart and the tests all go through this table::

    task, cfg = load_task_config("configs/latent_pmrf/ffhq512_c32.yaml", ["trainer.devices=2"])
    run_dir = train(task, cfg)

``load_task_config`` reads the config's ``task`` key, merges the YAML (and its ``base:`` chain) and
the overrides onto the task's dataclass, validates every value and checks that the data folders
hold images and the model fits its data, all before a weight file is opened. The builders import
Lightning and open weight files, so they run only in ``train``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_config, read_task
from ..data.degradations import degradation_preset
from ..data.image_folder import header_sizes, images_smaller_than
from ..data.image_io import list_images
from ..models.sim_vae import SimVAEConfig
from ..models.swinir import SwinIRConfig
from ..models.velocity import velocity_preset
from ..weights import BASELINE_VAE_RELEASES
from .re_vae_config import ReVAETrainConfig
from .restoration_config import FlowTrainConfig, PosteriorMeanTrainConfig
from .trainer_config import ImageSourceConfig
from .vae_config import VAETrainConfig

# Image headers read per training folder by the small-image check (evenly spaced over the folder):
# about 22 µs each from a warm cache, so at most ~0.2 s a folder.
MAX_HEADERS_CHECKED = 10_000


@dataclass(frozen=True)
class Task:
    name: str
    schema: type
    presets: dict[str, Callable[[str], Any]]
    check: Callable[[Any], None]  # files, folders and model/data fit; no weight file is opened
    build: Callable[..., tuple]  # (cfg, **extras) -> (LightningModule, LightningDataModule, callbacks)
    extras: tuple[str, ...] = field(default=())  # keyword arguments `build` accepts (tests inject metrics)


# ---------------------------------------------------------------------------------------- checks
def _check_folders(sources: list[tuple[str, str | None]]) -> dict[str, list[Path]]:
    """Each (config key, folder) exists and holds at least one image; {key: its images}."""
    found = {}
    for key, folder in sources:
        if folder is None:
            continue
        path = Path(folder)
        if not path.is_dir():
            raise ConfigError(f"{key}: folder not found: {path.resolve()}")
        try:
            found[key] = list_images(path)
        except FileNotFoundError as err:
            raise ConfigError(f"{key}: no images in {path.resolve()} (searched recursively)") from err
    return found


def _check_training_folders(sources: dict[str, ImageSourceConfig], crop_size: int | None, small_images: str) -> None:
    """``_check_folders`` of {config key: source}, and a warning per folder that holds images whose
    shorter side is below ``crop_size`` (read from the headers, at most ``MAX_HEADERS_CHECKED``),
    naming how many and one of them, and what ``data.small_images`` will do with them."""
    found = _check_folders([(key, s.root) for key, s in sources.items()])
    if crop_size is None:
        _check_one_size({key: found[key][: s.limit] for key, s in sources.items()})
        return
    for key, source in sources.items():
        files = found[key][: source.limit]
        small, checked = images_smaller_than(files, crop_size, MAX_HEADERS_CHECKED)
        if not small:
            continue
        path, width, height = small[0]
        sample = "" if checked == len(files) else f" (an even sample of its {len(files)})"
        fate = ("skipped and counted in data/skipped_files (data.small_images=skip; data.small_images=upscale "
                "enlarges them instead)" if small_images == "skip" else
                f"enlarged so that their shorter side is {crop_size} (data.small_images=upscale)")
        warnings.warn(f"{key}: {len(small)} of the {checked} images checked{sample} are smaller than the crop "
                      f"{crop_size}x{crop_size}, e.g. {path} ({width}x{height}): they will be {fate}", stacklevel=2)


def _check_one_size(files: dict[str, list[Path]]) -> None:
    """``data.crop_size: null`` trains on whole images, which batch only if all have one size: the
    first two sizes that differ (headers, at most ``MAX_HEADERS_CHECKED`` per folder) stop the run
    here, not at the first batch with a stacking error that names no file."""
    first: tuple[str, Path, int, int] | None = None
    for key, paths in files.items():
        sizes, _ = header_sizes(paths, MAX_HEADERS_CHECKED)
        for path, width, height in sizes:
            if first is None:
                first = (key, path, width, height)
            elif (width, height) != first[2:]:
                shortest = min(min(w, h) for _, w, h in sizes + [first[1:]])
                raise ConfigError(f"data.crop_size is null (whole images), but {key} holds {path} ({width}x{height}) "
                                  f"and {first[0]} holds {first[1]} ({first[2]}x{first[3]}): whole images must all "
                                  f"have one size to be batched; set data.crop_size (at most {shortest}, the shortest side "
                                  f"seen) or resize the images (data_prep/)")


def _check_vae(cfg: VAETrainConfig) -> None:
    if not cfg.data.train:
        raise ConfigError("data.train lists no image folders: add at least one {root: DIR}")
    _check_training_folders({f"data.train[{i}].root": s for i, s in enumerate(cfg.data.train)}, cfg.data.crop_size,
                            cfg.data.small_images)
    _check_folders([("data.val_dir", cfg.data.val_dir)])


def _check_bfr_data(cfg: FlowTrainConfig | PosteriorMeanTrainConfig, multiple: int) -> None:
    d = cfg.data
    if not d.train:
        raise ConfigError("data.train lists no HQ image folders: add at least one {root: DIR}")
    if d.crop_size is not None and d.crop_size % multiple:
        raise ConfigError(f"data.crop_size={d.crop_size} must be a multiple of {multiple} (the model's input multiple)")
    _check_training_folders({f"data.train[{i}].root": s for i, s in enumerate(d.train)}, d.crop_size, d.small_images)
    _check_folders([("data.val_dir", d.val_dir), ("data.val_lq_dir", d.val_lq_dir)])


def vae_channels_and_factor(spec: str) -> tuple[int, int] | None:
    """(latent channels, downsampling factor) of a VAE from its ``config.json`` alone (no weights);
    None when only the hub cache can say (read at build time)."""
    if spec in BASELINE_VAE_RELEASES:
        return BASELINE_VAE_RELEASES[spec].latent_channels, 8
    config = Path(spec) / "config.json"
    if not config.is_file():
        return None
    try:
        raw = json.loads(config.read_text())
        return int(raw["latent_channels"]), 2 ** (len(raw["block_out_channels"]) - 1)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"vae: {config} is not a VAE config.json with latent_channels and block_out_channels "
                          f"({err})") from err


def _check_flow(cfg: FlowTrainConfig) -> None:
    factor = 1
    if cfg.space == "latent":
        if not cfg.vae:
            raise ConfigError("space: latent needs `vae`: a Sim-VAE or diffusers AutoencoderKL directory, "
                              f"a Hugging Face repo id, or {'|'.join(BASELINE_VAE_RELEASES)}")
        found = vae_channels_and_factor(cfg.vae)
        if found is not None:
            channels, factor = found
            if (cfg.model.in_channels, cfg.model.out_channels) != (channels, channels):
                raise ConfigError(f"model.in_channels/out_channels are {cfg.model.in_channels}/"
                                  f"{cfg.model.out_channels} but vae {cfg.vae} has {channels} latent channels")
        else:
            factor = 8
    elif (cfg.model.in_channels, cfg.model.out_channels) != (3, 3):
        raise ConfigError("space: pixel needs model.in_channels = model.out_channels = 3")
    _check_bfr_data(cfg, factor * cfg.model.multiple)
    if cfg.sirr is not None:
        crop = cfg.sirr.data.augment.crop_size
        if crop != cfg.data.crop_size:
            raise ConfigError(f"sirr.data.augment.crop_size={crop} must equal data.crop_size={cfg.data.crop_size}: "
                              "the two tasks' items share training batches")
        _check_folders([("sirr.data.root", cfg.sirr.data.root)])
    if cfg.convergence.every_n_steps > 0 and not cfg.data.val_dir:
        raise ConfigError("convergence.every_n_steps > 0 needs data.val_dir (the fixed validation set)")


def _check_posterior_mean(cfg: PosteriorMeanTrainConfig) -> None:
    _check_bfr_data(cfg, cfg.model.scale)


def _check_re_vae(cfg: ReVAETrainConfig) -> None:
    """Folders, the starting snapshot's config.json (not its weights), crop sizes against its
    downsampling and the fine-tuned submodule names against the network (built on the meta device)."""
    import torch

    from ..models.lora import prepare_finetuning
    from ..models.sim_vae import SimVAE
    from ..models.vae_hub import CONFIG_NAME, read_config_json

    d = cfg.data
    if not d.background:
        raise ConfigError("data.background lists no image folders: add at least one {root: DIR}")
    if d.pairing == "sets" and not d.reflection:
        raise ConfigError("data.pairing=sets needs data.reflection folders (or set data.pairing=permute)")
    _check_training_folders({**{f"data.background[{i}].root": s for i, s in enumerate(d.background)},
                             **{f"data.reflection[{i}].root": s for i, s in enumerate(d.reflection)}},
                            d.crop_size, d.small_images)
    _check_folders([("data.val_background_dir", d.val_background_dir),
                    ("data.val_reflection_dir", d.val_reflection_dir)])
    if not Path(cfg.vae).is_dir():
        if cfg.vae.count("/") != 1 or Path(cfg.vae).exists():
            raise ConfigError(f"vae: {cfg.vae} is not a Sim-VAE snapshot directory ({CONFIG_NAME} + weights) "
                              "nor a Hugging Face repo id")
        return  # a repo id: its config is read from the hub cache at build time
    try:
        model_cfg = read_config_json(Path(cfg.vae) / CONFIG_NAME)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"vae: {err}") from err
    factor = model_cfg.downsample_factor
    for key in ("crop_size", "val_crop_size"):
        if getattr(d, key) % factor:
            raise ConfigError(f"data.{key}={getattr(d, key)} must be a multiple of {factor} "
                              f"(vae {cfg.vae} downsamples by {factor})")
    with torch.device("meta"):
        try:
            prepare_finetuning(SimVAE(model_cfg), cfg.modules, cfg.lora_or_none)
        except ValueError as err:
            raise ConfigError(f"modules: {err}") from err


# ---------------------------------------------------------------------------------------- builders
def _build_vae(cfg: VAETrainConfig, val_lpips: bool = True) -> tuple:
    from .vae_data import VAEDataModule
    from .vae_module import VAEModule

    return VAEModule(cfg, val_lpips=val_lpips), VAEDataModule(cfg.data), []


def _build_posterior_mean(cfg: PosteriorMeanTrainConfig) -> tuple:
    from .bfr_data import BFRDataModule
    from .posterior_mean_module import PosteriorMeanModule

    return PosteriorMeanModule(cfg), BFRDataModule(cfg.data), []


def _build_flow(cfg: FlowTrainConfig, convergence_metrics: dict | None = None) -> tuple:
    from .bfr_data import BFRDataModule
    from .convergence import ConvergenceCallback
    from .flow_module import FlowModule, build_pipeline

    callbacks = []
    if cfg.convergence.every_n_steps > 0:
        callbacks.append(ConvergenceCallback(cfg.convergence, cfg.data, convergence_metrics))
    return FlowModule(cfg, build_pipeline(cfg)), BFRDataModule(cfg.data, cfg.sirr), callbacks


def _build_re_vae(cfg: ReVAETrainConfig) -> tuple:
    from ..models.sim_vae import SimVAE
    from .re_vae_data import ReVAEDataModule
    from .re_vae_module import ReVAEModule

    return ReVAEModule(cfg, SimVAE.from_pretrained(cfg.vae)), ReVAEDataModule(cfg.data), []


TASKS: dict[str, Task] = {
    "vae": Task("vae", VAETrainConfig, {"model": SimVAEConfig.preset}, _check_vae, _build_vae,
                extras=("val_lpips",)),
    "posterior_mean": Task("posterior_mean", PosteriorMeanTrainConfig,
                           {"model": SwinIRConfig.preset, "data.degradation": degradation_preset},
                           _check_posterior_mean, _build_posterior_mean),
    "flow": Task("flow", FlowTrainConfig,
                 {"model": velocity_preset, "posterior_mean.model": SwinIRConfig.preset,
                  "data.degradation": degradation_preset},
                 _check_flow, _build_flow, extras=("convergence_metrics",)),
    "re_vae": Task("re_vae", ReVAETrainConfig, {}, _check_re_vae, _build_re_vae),
}


def load_task_config(path: str | Path, overrides: list[str] | None = None, check: bool = True) -> tuple[Task, Any]:
    """(task, validated config) of a training config file; ``check`` also checks its folders and
    the model/data fit. Every error is a ``ConfigError`` naming the file or key."""
    name = read_task(path, default="")
    for item in overrides or []:
        if item.split("=", 1)[0] == "task":
            name = item.split("=", 1)[1]
    if name not in TASKS:
        raise ConfigError(f"{path}: task {name!r} is not one of {sorted(TASKS)} (set `task:` in the file)")
    task = TASKS[name]
    cfg = load_config(task.schema, path, overrides, presets=task.presets)
    if check:
        try:
            task.check(cfg)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
    return task, cfg


def train(task: Task, cfg: Any, **extras) -> Path:
    """Check, then run (or resume) the task's training; returns the run directory."""
    unknown = sorted(set(extras) - set(task.extras))
    if unknown:
        raise TypeError(f"task {task.name} takes no {unknown}; it takes {list(task.extras)}")
    task.check(cfg)
    from .fit import fit

    return fit(task, cfg, **extras)
