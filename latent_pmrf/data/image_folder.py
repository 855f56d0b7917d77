"""Plain image-folder datasets for autoencoder training and validation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from .image_io import list_images, read_image


def to_tensor(image) -> torch.Tensor:
    """(H, W, 3) float array in [0, 1] -> (3, H, W) tensor in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).mul(2.0).sub(1.0).contiguous()


class ImageFolderCrops(Dataset):
    """Random ``crop_size`` crops (and optional horizontal flips) of images from several folders.

    ``sources`` is a list of ``(root, limit)``: every image under ``root`` in sorted path order,
    the first ``limit`` of them if given (the paper trains Sim-VAE on LSDIR crops plus the first
    10,000 FFHQ images). Randomness comes from torch's RNG, which Lightning seeds per worker.
    """

    def __init__(self, sources: list[tuple[str | Path, int | None]], crop_size: int, hflip: bool = True,
                 repeat: int = 1):
        self.files = [f for root, limit in sources for f in list_images(root, limit)]
        self.crop_size = crop_size
        self.hflip = hflip
        self.repeat = repeat  # each image appears `repeat` times per epoch, each time a new crop

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index % len(self.files)]
        image = read_image(path)
        h, w = image.shape[:2]
        c = self.crop_size
        if h < c or w < c:
            raise ValueError(f"{path} is {w}x{h}, smaller than the training crop {c}x{c}")
        top = int(torch.randint(0, h - c + 1, ()))
        left = int(torch.randint(0, w - c + 1, ()))
        crop = image[top : top + c, left : left + c]
        if self.hflip and bool(torch.rand(()) < 0.5):
            crop = crop[:, ::-1].copy()
        return to_tensor(crop)


class ImageFolderCenter(Dataset):
    """Deterministic centre crops (validation): the same pixels every epoch and every run."""

    def __init__(self, root: str | Path, crop_size: int, limit: int | None = None):
        self.files = list_images(root, limit)
        self.crop_size = crop_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index]
        image = read_image(path)
        h, w = image.shape[:2]
        c = self.crop_size
        if h < c or w < c:
            raise ValueError(f"{path} is {w}x{h}, smaller than the validation crop {c}x{c}")
        top, left = (h - c) // 2, (w - c) // 2
        return to_tensor(image[top : top + c, left : left + c])
