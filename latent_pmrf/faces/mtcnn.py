"""MTCNN (Zhang et al. 2016) from facenet-pytorch: its P/R/O-nets and cascade, its state dicts read
from the files ``latent_pmrf/weights.py`` resolves (the package's ``data/`` folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.image_io import to_uint8
from .detection import Face


class MTCNNDetector:
    """``min_face_size``: the smallest face the image pyramid looks for, in pixels (at least 12, the
    P-net's window); thresholds and pyramid factor are facenet-pytorch's defaults."""

    def __init__(self, pnet: Path, rnet: Path, onet: Path, device: str = "cpu", min_face_size: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709):
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        self.nets = []
        for net, path in ((PNet, pnet), (RNet, rnet), (ONet, onet)):
            module = net(pretrained=False)
            try:
                module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as err:  # unreadable, truncated, not a state dict
                raise ValueError(f"cannot load MTCNN weights from {path}: {err}") from err
            self.nets.append(module.to(device).eval())
        self.device = torch.device(device)
        self.min_face_size = max(int(min_face_size), 12)  # the P-net's own window is 12 px
        self.thresholds = list(thresholds)
        self.factor = factor

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> list[Face]:
        from facenet_pytorch.models.utils.detect_face import detect_face

        if min(image.shape[:2]) < self.min_face_size:  # an empty pyramid; facenet-pytorch would fail
            return []
        # facenet-pytorch takes 8-bit RGB, (H, W, 3)
        boxes, points = detect_face(to_uint8(image, (0.0, 1.0)), self.min_face_size, *self.nets, self.thresholds,
                                    self.factor, self.device)
        boxes = np.asarray(boxes[0], dtype=np.float64).reshape(-1, 5)  # object arrays: (N, 5) x0 y0 x1 y1 p
        points = np.asarray(points[0], dtype=np.float64).reshape(-1, 5, 2)
        return [Face(box[:4], float(box[4]), landmarks) for box, landmarks in zip(boxes, points)]
