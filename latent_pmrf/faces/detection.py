"""Face detectors behind one interface, and the table that names them (``restore --detector``).

A detector takes an (H, W, 3) float RGB image in [0, 1] and returns :class:`Face` records: a box, a
score and the 5 landmarks of ``alignment.py``'s order. Each entry of :data:`DETECTORS` names its
weight files (keys of ``latent_pmrf/weights.py``, so ``weights check`` lists them), and its loader
imports torch only when called: the CLI builds its choices from this table without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    score: float
    landmarks: np.ndarray  # (5, 2) (x, y): eye, eye, nose, mouth corner, mouth corner (image-left first)

    @property
    def size(self) -> float:
        """The box's shorter side in pixels (what ``--min-face-size`` compares)."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces of an (H, W, 3) float RGB image in [0, 1], in any order."""


@dataclass(frozen=True)
class DetectorSpec:
    what: str
    weights: tuple[str, ...]  # keys of latent_pmrf.weights.WEIGHT_FILES
    load: Callable[..., Detector]  # (weight paths, device=, min_face_size=) -> Detector


def _load_mtcnn(paths: list[Path], device: str, min_face_size: int) -> Detector:
    from .mtcnn import MTCNNDetector

    return MTCNNDetector(*paths, device=device, min_face_size=min_face_size)


def _load_retinaface(paths: list[Path], device: str, min_face_size: int) -> Detector:
    from .retinaface import RetinaFaceDetector

    return RetinaFaceDetector(paths[0], device=device)


DETECTORS: dict[str, DetectorSpec] = {
    "mtcnn": DetectorSpec("MTCNN (facenet-pytorch's P/R/O-nets, weights inside the package)",
                          ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"), _load_mtcnn),
    "retinaface": DetectorSpec("RetinaFace ResNet-50 (facexlib's, as in GFPGAN, CodeFormer and PMRF's demo)",
                               ("retinaface_resnet50",), _load_retinaface),
}


def build_detector(name: str, device: str = "cpu", min_face_size: int = 20) -> Detector:
    """The detector called ``name``; its weight files are looked up first (a missing one is a
    :class:`~latent_pmrf.weights.MissingWeightsError` saying where to put it)."""
    from ..weights import require

    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
    spec = DETECTORS[name]
    paths = [require(key, f"restore --faces detect --detector {name}") for key in spec.weights]
    return spec.load(paths, device=device, min_face_size=min_face_size)


def select_faces(faces: list[Face], height: int, width: int, min_face_size: float = 0,
                 only_center_face: bool = False) -> list[Face]:
    """Faces at least ``min_face_size`` pixels on the shorter box side, left to right; with
    ``only_center_face`` the one whose box centre is nearest the image centre (facexlib's
    ``get_center_face``)."""
    kept = [face for face in faces if face.size >= min_face_size]
    if only_center_face and kept:
        centres = np.array([[(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2] for f in kept])
        kept = [kept[int(np.argmin(np.linalg.norm(centres - [width / 2, height / 2], axis=1)))]]
    return sorted(kept, key=lambda f: (float(f.box[0]), float(f.box[1])))
