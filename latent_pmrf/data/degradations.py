"""The synthetic blind face degradation of DifFace / PMRF / Latent-PMRF (paper Sec. 4.1).

    y = { [ (x_hflip ⊛ k_σ) ↓_s + n_δ ]_JPEG_q } ↑_s ,  then gray with prob. 0.01, 8-bit rounding

follows GFPGAN's ``FFHQDegradationDataset`` (BasicSR kernels and OpenCV ops) step for step, with
DifFace's ranges (the ``difface`` preset): 41×41 isotropic/anisotropic Gaussian blur
σ ~ U[0.1, 15], downsampling by s ~ U[0.8, 32], Gaussian noise δ ~ U[0, 20]/255, JPEG quality
⌊U[30, 100]⌋. The ``gfpgan`` preset is GFPGAN's own training degradation (σ [0.1, 10],
s [0.8, 8], JPEG [60, 100], colour jitter); any other degradation of this family is a
``DegradationConfig`` (YAML-loadable) and needs no code.

Randomness is split in two so that a degradation is reproducible and inspectable:
``sample_params(rng)`` draws every scalar (and builds the kernel) from a ``numpy.random.Generator``,
``apply(img, params, rng)`` draws only the noise image. PCG64 streams are identical on every
platform, so parameters are bit-identical everywhere; pixel outputs are bit-identical for the
same OpenCV build (its large-kernel ``filter2D`` is DFT-based and may differ in the last float
bit across SIMD builds, which the final 8-bit rounding almost always absorbs).

Images are RGB float32 in [0, 1] (H, W, 3) at the interface; inside, the pipeline runs on the BGR
image as BasicSR does, because JPEG (chroma subsampling) and OpenCV's bilinear upscaling are not
symmetric in the channel order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Optional

import cv2
import numpy as np

KERNEL_TYPES = ("iso", "aniso")
COLOR_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


@dataclass
class DegradationConfig:
    """Every range and probability of the pipeline; a step with probability 0 is skipped."""

    preset: Optional[str] = None  # the preset these values started from (DEGRADATION_PRESETS), if any
    hflip_prob: float = 0.5
    # blur (BasicSR random_mixed_kernels with bivariate Gaussians)
    blur_prob: float = 1.0
    kernel_size: int = 41
    kernel_list: list[str] = field(default_factory=lambda: ["iso", "aniso"])
    kernel_prob: list[float] = field(default_factory=lambda: [0.5, 0.5])
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 15.0])
    rotation_range: list[float] = field(default_factory=lambda: [-math.pi, math.pi])
    # downsample then resize back, bilinear (cv2.INTER_LINEAR)
    downsample_range: list[float] = field(default_factory=lambda: [0.8, 32.0])
    # Gaussian colour noise, sigma in 8-bit units (divided by 255 when applied)
    noise_prob: float = 1.0
    noise_range: list[float] = field(default_factory=lambda: [0.0, 20.0])
    # JPEG quality int(U[lo, hi])
    jpeg_prob: float = 1.0
    jpeg_range: list[float] = field(default_factory=lambda: [30.0, 100.0])
    # GFPGAN colour jitter: a per-channel shift in 8-bit units, then (on the LQ after gray)
    # torchvision-style brightness/contrast/saturation/hue in random order
    color_jitter_prob: float = 0.0
    color_jitter_shift: float = 20.0
    color_jitter_pt_prob: float = 0.0
    brightness: list[float] = field(default_factory=lambda: [0.5, 1.5])
    contrast: list[float] = field(default_factory=lambda: [0.5, 1.5])
    saturation: list[float] = field(default_factory=lambda: [0.0, 1.5])
    hue: list[float] = field(default_factory=lambda: [-0.1, 0.1])
    # gray LQ (and GT, when gt_gray) with this probability
    gray_prob: float = 0.01
    gt_gray: bool = True

    def __post_init__(self) -> None:
        def check(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"degradation config: {key} = {getattr(self, key)!r}, expected {expected}")

        for key in ("hflip_prob", "blur_prob", "noise_prob", "jpeg_prob", "color_jitter_prob",
                    "color_jitter_pt_prob", "gray_prob"):
            check(0.0 <= getattr(self, key) <= 1.0, key, "a probability in [0, 1]")
        for key in ("blur_sigma", "rotation_range", "downsample_range", "noise_range", "jpeg_range",
                    "brightness", "contrast", "saturation", "hue"):
            value = getattr(self, key)
            check(len(value) == 2 and value[0] <= value[1], key, "a range [low, high] with low <= high")
        check(self.kernel_size % 2 == 1 and self.kernel_size >= 3, "kernel_size", "an odd size >= 3")
        check(all(k in KERNEL_TYPES for k in self.kernel_list), "kernel_list", f"kernel types from {KERNEL_TYPES}")
        check(len(self.kernel_prob) == len(self.kernel_list) and abs(sum(self.kernel_prob) - 1) < 1e-6,
              "kernel_prob", "one probability per kernel_list entry, summing to 1")
        check(self.blur_sigma[0] > 0, "blur_sigma", "sigmas > 0")
        check(self.downsample_range[0] > 0, "downsample_range", "scales > 0")
        check(1 <= self.jpeg_range[0] and self.jpeg_range[1] <= 100, "jpeg_range", "qualities in [1, 100]")


DEGRADATION_PRESETS: dict[str, dict] = {
    # DifFace configs/training/swinir_ffhq512.yaml, used unchanged by PMRF and Latent-PMRF.
    "difface": {},
    # GFPGAN options/train_gfpgan_v1.yml.
    "gfpgan": dict(blur_sigma=[0.1, 10.0], downsample_range=[0.8, 8.0], jpeg_range=[60.0, 100.0],
                   color_jitter_prob=0.3, color_jitter_pt_prob=0.3),
}


def degradation_preset(name: str, **overrides) -> DegradationConfig:
    """The config of a named preset (``data.degradation.preset`` in a training config)."""
    if name not in DEGRADATION_PRESETS:
        raise KeyError(f"unknown degradation preset {name!r}; available: {sorted(DEGRADATION_PRESETS)}")
    return DegradationConfig(**{"preset": name, **DEGRADATION_PRESETS[name], **overrides})


@dataclass
class DegradationParams:
    """One draw of every random choice except the noise image (drawn in ``apply``)."""

    hflip: bool
    kernel_type: str | None  # None: no blur
    sigma_x: float
    sigma_y: float
    rotation: float
    kernel: np.ndarray | None  # (k, k) float64, sums to 1
    scale: float
    noise_std: float  # in [0, 1] units; 0 = no noise
    jpeg_quality: int | None  # None: no JPEG
    color_shift: np.ndarray | None  # (3,) RGB shift in [0, 1] units
    to_gray: bool
    color_jitter: list[tuple[str, float]] | None  # ops in application order with their factors

    def describe(self) -> str:
        """A short human-readable line (used under degrade-preview tiles)."""
        blur = "no blur" if self.kernel is None else (
            f"iso σ={self.sigma_x:.1f}" if self.kernel_type == "iso"
            else f"aniso σ=({self.sigma_x:.1f},{self.sigma_y:.1f}) θ={math.degrees(self.rotation):.0f}°")
        jpeg = "no jpeg" if self.jpeg_quality is None else f"q={self.jpeg_quality}"
        extra = (" gray" if self.to_gray else "") + (" flip" if self.hflip else "")
        return f"{blur} s={self.scale:.1f} n={self.noise_std * 255:.1f} {jpeg}{extra}"


def mesh_grid(kernel_size: int) -> np.ndarray:
    """(k, k, 2) integer (x, y) offsets centred at 0, as BasicSR's ``mesh_grid``."""
    ax = np.arange(-kernel_size // 2 + 1.0, kernel_size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def bivariate_gaussian_kernel(kernel_size: int, sigma_x: float, sigma_y: float, rotation: float) -> np.ndarray:
    """exp(-½ pᵀ Σ⁻¹ p) on the grid, Σ = R diag(σx², σy²) Rᵀ, normalised to sum 1.

    Bit-identical to BasicSR's ``bivariate_Gaussian``: Σ is associated as R (D Rᵀ) as in its
    ``sigma_matrix2`` and pᵀΣ⁻¹ uses ``np.dot`` as its ``pdf2`` (``@`` on the (k, k, 2) grid rounds
    differently in the last bit)."""
    c, s = math.cos(rotation), math.sin(rotation)
    u = np.array([[c, -s], [s, c]])
    sigma = np.dot(u, np.dot(np.diag([sigma_x**2, sigma_y**2]), u.T))
    grid = mesh_grid(kernel_size)
    kernel = np.exp(-0.5 * np.sum(np.dot(grid, np.linalg.inv(sigma)) * grid, axis=2))
    return kernel / kernel.sum()


class BFRDegradation:
    """``lq, gt = BFRDegradation.from_preset("difface")(img, rng)``; see the module docstring."""

    def __init__(self, config: DegradationConfig | None = None):
        self.config = config or DegradationConfig()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> BFRDegradation:
        return cls(degradation_preset(name, **overrides))

    @classmethod
    def from_dict(cls, values: dict) -> BFRDegradation:
        """A preset (``preset: difface``) and/or explicit fields; unknown keys are an error."""
        values = dict(values)
        preset = values.pop("preset", None)
        known = {f.name for f in fields(DegradationConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown degradation config key(s) {unknown}; known: {sorted(known)}")
        if preset is None:
            return cls(DegradationConfig(**values))
        return cls.from_preset(preset, **values)

    # ------------------------------------------------------------------ random draws
    def sample_params(self, rng: np.random.Generator) -> DegradationParams:
        c = self.config
        hflip = bool(rng.random() < c.hflip_prob)
        kernel_type, sigma_x, sigma_y, rotation, kernel = None, 0.0, 0.0, 0.0, None
        if rng.random() < c.blur_prob:
            kernel_type = c.kernel_list[int(rng.choice(len(c.kernel_list), p=c.kernel_prob))]
            sigma_x = float(rng.uniform(*c.blur_sigma))
            if kernel_type == "aniso":
                sigma_y = float(rng.uniform(*c.blur_sigma))
                rotation = float(rng.uniform(*c.rotation_range))
            else:
                sigma_y = sigma_x
            kernel = bivariate_gaussian_kernel(c.kernel_size, sigma_x, sigma_y, rotation)
        scale = float(rng.uniform(*c.downsample_range))
        noise_std = float(rng.uniform(*c.noise_range)) / 255.0 if rng.random() < c.noise_prob else 0.0
        jpeg_quality = int(rng.uniform(*c.jpeg_range)) if rng.random() < c.jpeg_prob else None
        color_shift = None
        if rng.random() < c.color_jitter_prob:
            shift = c.color_jitter_shift / 255.0
            color_shift = rng.uniform(-shift, shift, 3).astype(np.float32)
        to_gray = bool(rng.random() < c.gray_prob)
        color_jitter = None
        if rng.random() < c.color_jitter_pt_prob:
            order = rng.permutation(len(COLOR_JITTER_OPS))
            color_jitter = [(COLOR_JITTER_OPS[i], float(rng.uniform(*getattr(c, COLOR_JITTER_OPS[i])))) for i in order]
        return DegradationParams(hflip, kernel_type, sigma_x, sigma_y, rotation, kernel, scale, noise_std,
                                 jpeg_quality, color_shift, to_gray, color_jitter)

    # ------------------------------------------------------------------ the pipeline
    def apply(self, img: np.ndarray, params: DegradationParams,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(LQ, GT), both (H, W, 3) float32 RGB in [0, 1]; LQ on the 8-bit grid. ``rng`` draws the noise.

        Internally BGR, as BasicSR: OpenCV's JPEG and its bilinear upscaling are not
        channel-order symmetric, so this is what makes the output bit-identical to BasicSR's.
        """
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
        # OpenCV permutes channels ~15x faster than a NumPy copy of img[..., ::-1] (a length-3
        # axis with a negative stride); both are exact.
        bgr = cv2.cvtColor(np.asarray(img, dtype=np.float32), cv2.COLOR_RGB2BGR)  # a new array
        if params.hflip:
            cv2.flip(bgr, 1, bgr)
        h, w = bgr.shape[:2]
        size = (int(w // params.scale), int(h // params.scale))
        if min(size) < 1:
            raise ValueError(f"image {w}x{h} is too small for downsampling by {params.scale:.2f}")
        lq = bgr if params.kernel is None else cv2.filter2D(bgr, -1, params.kernel)  # reflect-101 border
        lq = cv2.resize(lq, size, interpolation=cv2.INTER_LINEAR)
        if params.noise_std > 0:  # noise channels in BGR order
            noise = rng.standard_normal(lq.shape, dtype=np.float32)
            lq = np.clip(lq + noise * np.float32(params.noise_std), 0.0, 1.0)
        if params.jpeg_quality is not None:
            lq = jpeg_bgr(lq, params.jpeg_quality)
        lq = cv2.resize(lq, (w, h), interpolation=cv2.INTER_LINEAR)
        if params.color_shift is not None:
            lq = np.clip(lq + params.color_shift[::-1], 0.0, 1.0)
        gt = bgr
        if params.to_gray:
            lq = gray_bgr(lq)
            if self.config.gt_gray:
                gt = gray_bgr(gt)
        lq = cv2.cvtColor(lq, cv2.COLOR_BGR2RGB)  # a new array, rounded in place below
        if params.color_jitter is not None:
            lq = np.ascontiguousarray(color_jitter(lq, params.color_jitter))
        np.multiply(lq, np.float32(255.0), out=lq)
        np.rint(lq, out=lq)
        np.clip(lq, 0.0, 255.0, out=lq)
        np.divide(lq, np.float32(255.0), out=lq)
        return lq, cv2.cvtColor(gt, cv2.COLOR_BGR2RGB)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.apply(img, self.sample_params(rng), rng)


def jpeg_bgr(img: np.ndarray, quality: int) -> np.ndarray:
    """BasicSR ``add_jpg_compression`` on a BGR float image: ×255 saturated to uint8 (round half to
    even, OpenCV's float→uchar cast), OpenCV JPEG encode/decode, back to float32 / 255."""
    img8 = np.clip(np.rint(img * np.float32(255.0)), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img8, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV failed to JPEG-encode a {img.shape} image at quality {quality}")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) / np.float32(255.0)


def gray_bgr(img: np.ndarray) -> np.ndarray:
    """OpenCV luma (0.299 R + 0.587 G + 0.114 B) of a BGR image, repeated on 3 channels."""
    return np.repeat(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2)


def color_jitter(img: np.ndarray, ops: list[tuple[str, float]]) -> np.ndarray:
    """GFPGAN ``color_jitter_pt``: torchvision's adjust_* on the RGB image, in the given order."""
    import torch
    from torchvision.transforms import functional as TF

    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    adjust = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
              "saturation": TF.adjust_saturation, "hue": TF.adjust_hue}
    for name, factor in ops:
        x = adjust[name](x, factor)
    return x.permute(1, 2, 0).numpy().astype(np.float32, copy=False)
