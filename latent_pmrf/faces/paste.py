"""Putting restored crops back into the photo: the background enlarged with bicubic, each face warped
back by the inverse similarity and blended through facexlib's feathered square mask. At upscale 1
and for faces no smaller than the crop this is facexlib's ``paste_faces_to_input_image`` (tested
against it); otherwise it differs on purpose: the half-pixel offset of ``alignment.paste_matrix``
and an area-filtered shrink of the crop before the warp."""

from __future__ import annotations

import cv2
import numpy as np

from .alignment import FACE_SIZE, paste_matrix


def upscale_background(image: np.ndarray, upscale: int) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (s·H, s·W, 3): bicubic (``cv2.INTER_CUBIC``), clipped; a copy at s = 1."""
    if upscale == 1:
        return image.copy()
    height, width = image.shape[:2]
    return np.clip(cv2.resize(image, (width * upscale, height * upscale), interpolation=cv2.INTER_CUBIC), 0, 1)


def _as_3x3(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def paste_face(canvas: np.ndarray, face: np.ndarray, matrix: np.ndarray, upscale: int = 1
               ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Blend the restored (FACE_SIZE, FACE_SIZE, 3) crop ``face`` of the face aligned by ``matrix``
    into ``canvas`` (the photo enlarged ``upscale`` times) in place, and return the soft mask it used
    over the canvas region it touched, as ``(mask, (y0, y1, x0, x1))``. Pixels where the mask is 0
    keep their exact values."""
    to_canvas = paste_matrix(matrix, upscale)
    scale = float(np.sqrt(abs(np.linalg.det(to_canvas[:, :2]))))  # canvas pixels per crop pixel
    side = FACE_SIZE
    if scale < 1:  # shrink with an area filter first: a bilinear warp alone would alias
        side = max(round(FACE_SIZE * scale), 1)
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        k = FACE_SIZE / side  # small-crop pixel v -> crop pixel (v + ½)·k - ½
        to_canvas = (_as_3x3(to_canvas) @ np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2], [0, 0, 1]]))[:2]
    # Work in the canvas box around the warped square (2 px margin), not the whole canvas.
    corners = np.array([[-0.5, -0.5, 1], [side - 0.5, -0.5, 1], [-0.5, side - 0.5, 1], [side - 0.5, side - 0.5, 1]])
    xy = corners @ to_canvas.T
    height, width = canvas.shape[:2]
    x0, y0 = (max(int(np.floor(v)) - 2, 0) for v in xy.min(axis=0))
    x1, y1 = (min(int(np.ceil(v)) + 3, limit) for v, limit in zip(xy.max(axis=0), (width, height)))
    if x0 >= x1 or y0 >= y1:
        return np.zeros((0, 0), np.float32), (y0, y0, x0, x0)
    to_box = to_canvas - np.array([[0, 0, x0], [0, 0, y0]])
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(face, to_box, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # facexlib's square mask (paste_faces_to_input_image without a parsing net): the warped square,
    # eroded by 2·s px (its bilinear rim), then by 2w and blurred by 2w + 1 px, w = 1/20 of the side
    # of the face in canvas pixels; the soft mask stays inside the square. Erosion does not eat in
    # from outside (OpenCV's default border), so a face cut by the photo's edge reaches that edge.
    square = cv2.warpAffine(np.ones((side, side), np.float32), to_box, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    square = cv2.erode(square, np.ones((2 * upscale, 2 * upscale), np.uint8))
    edge = max(int(np.sqrt(square.sum())) // 20, 1)
    core = cv2.erode(square, np.ones((2 * edge, 2 * edge), np.uint8))
    mask = cv2.GaussianBlur(core, (2 * edge + 1, 2 * edge + 1), 0)[..., None]
    region = canvas[y0:y1, x0:x1]
    region[...] = mask * warped + (1 - mask) * region
    return mask[..., 0], (y0, y1, x0, x1)
