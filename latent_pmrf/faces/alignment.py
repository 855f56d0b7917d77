"""Aligning a face by its 5 landmarks to the FFHQ 512² template, as GFPGAN, CodeFormer and PMRF's demo
do through facexlib's ``FaceRestoreHelper``.

Coordinates are OpenCV's: (x, y) in pixels with pixel centres at integers. Landmark order: the eye on
the image's left, the other eye, the nose tip, the mouth corner on the image's left, the other corner.
"""

from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 512  # side of the aligned crops the restoration models are trained on (FFHQ 512²)

# facexlib's FaceRestoreHelper.face_template: the mean 5 landmarks of FFHQ's 512² faces.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]])

# What the crop shows where it leaves the photo: facexlib's borderValue (135, 133, 132), which is BGR.
PAD_RGB = (132 / 255, 133 / 255, 135 / 255)


def alignment_matrix(landmarks: np.ndarray) -> np.ndarray | None:
    """The 2×3 similarity (rotation, uniform scale, translation) taking the photo's ``landmarks``
    (5, 2) onto the template, estimated with least median of squares as facexlib does
    (``cv2.estimateAffinePartial2D(..., method=cv2.LMEDS)``); None when the points are degenerate."""
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float64).reshape(5, 2), FFHQ_TEMPLATE_512,
                                            method=cv2.LMEDS)
    return matrix


def warp_to_template(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The aligned (FACE_SIZE, FACE_SIZE, 3) crop of an (H, W, 3) float image: bilinear, and facexlib's
    gray where the crop leaves the photo (a face at the border is padded, not dropped)."""
    return cv2.warpAffine(image, matrix, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=PAD_RGB)


def paste_matrix(matrix: np.ndarray, upscale: int = 1) -> np.ndarray:
    """The 2×3 map from crop pixels back to the photo enlarged ``upscale`` times: the inverse of
    ``matrix``, then x ↦ s·x + (s - 1)/2, the pixel-centre convention of ``cv2.resize`` (a pixel's
    centre x lands on s·(x + ½) - ½). facexlib adds s/2 instead, half a pixel off for s > 1."""
    inverse = cv2.invertAffineTransform(matrix)
    return np.concatenate([inverse[:, :2] * upscale, inverse[:, 2:] * upscale + (upscale - 1) / 2], axis=1)
