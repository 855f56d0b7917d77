"""Pretrained files in torch hub's cache (``$TORCH_HOME/hub/checkpoints``): found, or a clear error
naming the file, the folder searched, what needs it and how to get it (no downloads here)."""

from __future__ import annotations

from pathlib import Path

import torch

TORCHVISION_HINT = ("it is torchvision's own download, e.g. from a machine with internet: "
                    "python -c 'import torchvision; torchvision.models.vgg19(weights=\"IMAGENET1K_V1\")'")


def torch_hub_checkpoint(filename: str, needed_by: str, how_to_get: str = TORCHVISION_HINT) -> Path:
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{needed_by} needs the pretrained weight file {filename!r}, which is not in {folder}. "
            f"Copy it there ({how_to_get}), or set TORCH_HOME to the folder that holds hub/checkpoints/{filename}."
        )
    return path
