"""Every pretrained file the repository can use: where its library expects it, whether it is
there, which commands need it and how to get it (``latent-pmrf weights check``).

Nothing here downloads. Each file lives in the standard cache of the library that reads it:
torch hub's ``$TORCH_HOME/hub/checkpoints`` (torchvision, our own loaders), pyiqa's
``$TORCH_HOME/hub/pyiqa``, CLIP's ``$TORCH_HOME/hub/clip``, clean-fid's temp folder and package
``stats/`` folder, and the Hugging Face cache. ``require(key, needed_by)`` returns the path or raises
:class:`MissingWeightsError` naming the file, the folder searched and what needs it.
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .losses.perceptual import VGG19_WEIGHTS_FILE
from .models.swinir import SWINIR_WEIGHTS_FILE, SWINIR_WEIGHTS_URL


class MissingWeightsError(FileNotFoundError):
    """A pretrained file is not where its library looks for it."""


def torch_hub_dir() -> Path:
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


def _cleanfid_stats() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("cleanfid")
    base = Path(spec.origin).parent if spec and spec.origin else Path(tempfile.gettempdir()) / "cleanfid"
    return base / "stats"


def _hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@dataclass(frozen=True)
class WeightFile:
    key: str
    what: str
    filename: str  # for the HF cache: the repo id; the folder is models--owner--name
    folder: Callable[[], Path]
    needed_by: str
    how_to_get: str

    @property
    def path(self) -> Path:
        if self.folder is _hf_cache:
            return _hf_cache() / ("models--" + self.filename.replace("/", "--"))
        return self.folder() / self.filename

    def present(self) -> bool:
        if self.folder is _hf_cache:
            return any((self.path / "snapshots").glob("*/*")) if (self.path / "snapshots").is_dir() else False
        return self.path.is_file()


_TV = "torchvision's own download (run once with internet: {})"
_PYIQA = "pyiqa downloads it from its Hugging Face mirror chaofengc/IQA-PyTorch-Weights; copy {} there"
_VQFR = ("from VQFR's Google Drive (github.com/TencentARC/VQFR, 'metric weights'), as PMRF's "
         "evaluation/metrics_ckpt/README.md says")

WEIGHT_FILES: dict[str, WeightFile] = {w.key: w for w in [
    WeightFile("vgg19", "VGG19 (ImageNet)", VGG19_WEIGHTS_FILE, _hub_checkpoints,
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
    WeightFile("ffhq_stats", "FFHQ-70k Inception statistics (512², clean)", "ffhq_clean_trainval70k_512.npz",
               _cleanfid_stats, "evaluate fid --fid-reference ffhq",
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
    WeightFile("qalign", "Q-Align (mPLUG-Owl2)", "q-future/one-align", _hf_cache, "evaluate qalign",
               "huggingface-cli download q-future/one-align"),
    WeightFile("niqe", "NIQE model parameters", "niqe_modelparameters.mat", _pyiqa_cache,
               "evaluate niqe", _PYIQA.format("niqe_modelparameters.mat")),
    WeightFile("arcface", "ArcFace ResNet-18 (VQFR)", "resnet18_110.pth", _hub_checkpoints, "evaluate deg", _VQFR),
    WeightFile("fan", "FAN 4-HG, 98 WFLW landmarks (AWing)", "alignment_WFLW_4HG.pth", _hub_checkpoints,
               "evaluate lmd", _VQFR),
    WeightFile("sim_vae_c32", "Sim-VAE f8c32", "sienna223/Sim-VAE-c32", _hf_cache,
               "train task=flow with the released VAE; export-vae",
               "huggingface-cli download sienna223/Sim-VAE-c32"),
    WeightFile("sim_vae_c16", "Sim-VAE f8c16", "sienna223/Sim-VAE-c16", _hf_cache,
               "Tables 1 and 3 (c16 row)", "huggingface-cli download sienna223/Sim-VAE-c16"),
    WeightFile("swinir_difface", "DifFace SwinIR posterior mean", SWINIR_WEIGHTS_FILE, _hub_checkpoints,
               "train task=flow, restore (posterior_mean.source=difface)", SWINIR_WEIGHTS_URL),
]}


def require(key: str, needed_by: str) -> Path:
    """The path of a registered pretrained file, or :class:`MissingWeightsError`."""
    w = WEIGHT_FILES[key]
    if not w.present():
        raise MissingWeightsError(
            f"{needed_by} needs {w.what}: {w.filename!r} is not in {w.path.parent if w.folder is not _hf_cache else w.path}. "
            f"Get it from {w.how_to_get}, and put it there "
            f"(TORCH_HOME / HF_HOME move the caches)."
        )
    return w.path


def check_table() -> list[dict[str, str]]:
    """One row per file: key, what, where, present, needed_by."""
    return [{"key": w.key, "what": w.what, "path": str(w.path), "present": "yes" if w.present() else "no",
             "needed_by": w.needed_by} for w in WEIGHT_FILES.values()]


def hf_snapshot(key: str, needed_by: str) -> Path:
    """The newest snapshot folder of a registered Hugging Face repo in the HF cache."""
    require(key, needed_by)
    snapshots = sorted((WEIGHT_FILES[key].path / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime)
    return snapshots[-1]

