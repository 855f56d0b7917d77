"""Identity and landmark fidelity (paper Sec. 4.1 and Table 4, "Deg." and "LMD"), with the
conventions of VQFR's scripts that PMRF's evaluation reuses.

* Deg: each image to gray with OpenCV's BT.601 conversion (the script reads ``cv2.imread(path, 0)``,
  whose PNG/JPEG decoders convert inside libpng/libjpeg and can differ by one gray level), resized to 128×128 (``cv2.INTER_LINEAR``),
  scaled to [-1, 1], embedded by ArcFace ResNet-18; the value is the angle between the restored
  and the ground-truth embeddings in degrees. The table number is the mean over all images, as
  the official Latent-PMRF evaluation averages (PMRF's script leaves out pairs under 1°).
* LMD: each image resized to 256×256 (``cv2.resize``, bilinear), RGB in [0, 1], 98 WFLW landmarks
  from FAN's last 64×64 heatmaps (arg-max, a quarter-pixel step toward the larger neighbour,
  +0.5, scaled to the input's pixels); the value is the mean Euclidean distance between the
  restored and the ground-truth landmarks.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..models.state_dict import load_strict
from ..weights import require
from .backbones.arcface import ArcFaceResNet18
from .backbones.fan import FAN
from .base import ImageMetric, to_uint8_hwc
from .registry import metric_info


def embedding_angle_degrees(a, b) -> np.ndarray:
    """Per row, the angle between two embeddings in degrees."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def landmarks_from_heatmaps(heatmaps: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(B, N, h, w) heatmaps -> (B, N, 2) (x, y) landmarks in pixels of an image of ``image_size``
    = (H, W). Neighbours are read in the flattened heatmap, each index clamped to the map (VQFR's
    script clamps all landmarks together when any one overflows: it differs only for peaks on the
    map's last row or first row)."""
    b, n, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, n, h * w)
    idx = flat.argmax(axis=2)  # (B, N)

    def at(offset: int) -> np.ndarray:
        return np.take_along_axis(flat, np.clip(idx + offset, 0, h * w - 1)[..., None], axis=2)[..., 0]

    points = np.stack([idx % w, idx // w], axis=2).astype(np.float64)
    points += 0.25 * np.sign(np.stack([at(1) - at(-1), at(w) - at(-w)], axis=2))
    points += 0.5
    return points * np.array([image_size[1] / w, image_size[0] / h])


def landmark_distance(gt_landmarks: np.ndarray, pred_landmarks: np.ndarray) -> np.ndarray:
    """(B, N, 2) twice -> (B,) mean over landmarks of the Euclidean distance."""
    return np.sqrt(((np.asarray(gt_landmarks) - np.asarray(pred_landmarks)) ** 2).sum(-1)).mean(-1)


def _load(path, what: str) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict for {what}, got {type(state).__name__}")
    return state


class IdentityAngle(ImageMetric):
    info = metric_info("deg")

    def __init__(self, model: ArcFaceResNet18, device: str | torch.device = "cpu"):
        self.model, self.device = model.to(device).eval(), device

    @classmethod
    def pretrained(cls, device: str | torch.device = "cpu") -> IdentityAngle:
        path = require("arcface", "Deg (ArcFace identity angle)")
        state = _load(path, "ArcFace ResNet-18")
        model = ArcFaceResNet18()  # the file was saved from nn.DataParallel: drop "module."
        load_strict(model, {k.removeprefix("module."): v for k, v in state.items()}, str(path))
        return cls(model, device)

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        gray = [cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (128, 128), interpolation=cv2.INTER_LINEAR)
                for im in to_uint8_hwc(images)]
        x = (np.stack(gray).astype(np.float32) - 127.5) / 127.5  # (B, 128, 128) in [-1, 1]
        return torch.from_numpy(x)[:, None].to(self.device)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = self.model(torch.cat([self._inputs(pred), self._inputs(ref)])).double().cpu().numpy()
        a, b = np.split(embeddings, 2)
        return torch.from_numpy(embedding_angle_degrees(a, b))


class LandmarkDistance(ImageMetric):
    info = metric_info("lmd")

    def __init__(self, model: FAN, device: str | torch.device = "cpu"):
        self.model, self.device = model.to(device).eval(), device

    @classmethod
    def pretrained(cls, device: str | torch.device = "cpu") -> LandmarkDistance:
        path = require("fan", "LMD (FAN landmark distance)")
        state = _load(path, "FAN")
        if "state_dict" not in state:
            raise ValueError(f"{path}: expected a checkpoint with a 'state_dict' entry (AWing's format)")
        model = FAN()
        load_strict(model, state["state_dict"], str(path))
        return cls(model, device)

    def landmarks(self, images: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) in [0, 1] -> (B, 98, 2) landmarks in pixels of the input."""
        h, w = images.shape[-2:]
        # resized in BGR order, as the reference reads files with cv2.imread
        small = [cv2.resize(np.ascontiguousarray(im[..., ::-1]), (256, 256))[..., ::-1] for im in to_uint8_hwc(images)]
        x = torch.from_numpy(np.ascontiguousarray(np.stack(small))).permute(0, 3, 1, 2).float().div(255)
        with torch.no_grad():
            heatmaps = self.model(x.to(self.device))[:, :-1]  # drop the boundary channel
        return landmarks_from_heatmaps(heatmaps.float().cpu().numpy(), (h, w))

    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        both = self.landmarks(torch.cat([pred, ref]))
        restored, gt = np.split(both, 2)
        return torch.from_numpy(landmark_distance(gt, restored))


FACE_METRICS = {cls.info.name: cls for cls in (IdentityAngle, LandmarkDistance)}
