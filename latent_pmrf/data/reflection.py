"""Reflection synthesis for single-image reflection removal (SIRR): a blended image I from a
transmission (background) layer T and a reflection image R, the recipe DSRNet and RDNet train with.

    R_b = K_{k,σ} * R                   Gaussian blur, k ∈ {5, 7, 9, 11} w.p. .1/.2/.3/.4, σ ~ U[2, 5]
    T_m = a·T,  R_m = b·R_b             a ~ U[0.8, 1] (the mix only: the target stays T), b ~ U[0.4, 1]
    I = T_m + R_m − T_m·R_m             screen blend, probability 0.7
    I = clip(T_m + clip(R_m − m))       otherwise: additive with overflow compensation,
        m = γ·(mean of (T_m + R_m) over the values > 1, − 1),  γ = 1.3   (only when T_m + R_m > 1 somewhere)

Sources, read in each repository (the formulas are re-derived here, none of their code is used):
  * blur, a, b, the 70 % screen blend and the compensated additive branch: DSRNet
    (mingcv/DSRNet ``data/sirs_dataset.py``, ``ReflectionSynthesis``), unchanged in RDNet
    (lime-j/RDNet ``data/dataset_sir.py``);
  * the overflow compensation m: ERRNet (Vandermode/ERRNet ``data/transforms.py``,
    ``ReflectionSythesis_1``: γ drawn from U[low_gamma, high_gamma] = U[1.3, 1.3]);
  * per-channel truncated-normal transmission gains (``transmission_gain="truncnorm"``): RDNet
    (lime-j/RDNet ``data/new_dataset.py``, ``ReflectionSynthesis``), one gain per RGB channel.

Where those differ from the recipe above, this module follows the recipe:
  * the blur is a zero-padded 'same' convolution as in all three (``scipy.signal.convolve2d``);
    ERRNet builds its kernel at size 11 whatever size it drew, DSRNet and RDNet at the drawn size;
  * ERRNet has no a or b (the ``errnet`` preset sets both ranges to [1, 1] and never screens);
  * RDNet scales T in place, so its target carries the gains too; here the target is the unscaled T
    unless ``gain_on_target`` (the ``rdnet`` preset sets it), and a target scaled above 1 is clipped;
  * the blended image is clipped to [0, 1] at the end (a no-op unless a gain exceeds 1, which only
    the truncated-normal gains can: RDNet leaves its screen branch unclipped).

The α-mixing form ``alpha_mix`` is the linear model I = (1-α)B + αR of GenSIRR's reflection-
equivariance loss ‖E(I) − ((1-α)E(B) + αE(R))‖².

Randomness follows ``degradations.py``: ``sample_params(rng)`` draws every scalar from a
``numpy.random.Generator``, ``apply(T, R, params)`` is deterministic. Images are (H, W, 3) float32
RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

TRANSMISSION_GAINS = ("uniform", "truncnorm")


@dataclass
class ReflectionSynthesisConfig:
    """Every range and probability of the synthesis (defaults: DSRNet/RDNet's ``ReflectionSynthesis``)."""

    preset: Optional[str] = None  # the preset these values started from (REFLECTION_PRESETS), if any
    kernel_sizes: list[int] = field(default_factory=lambda: [5, 7, 9, 11])
    kernel_probs: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4])
    sigma_range: list[float] = field(default_factory=lambda: [2.0, 5.0])
    # "uniform": T_m = a·T with a ~ U[transmission_scale_range]; "truncnorm": RDNet's per-channel gains
    transmission_gain: str = "uniform"
    transmission_scale_range: list[float] = field(default_factory=lambda: [0.8, 1.0])
    # RDNet's gains, one [mean, std, low, high] per RGB channel (scipy truncnorm bounds low/high)
    truncnorm_gains: list[list[float]] = field(default_factory=lambda: [
        [1.109, 0.118, 0.82, 1.42], [1.106, 0.115, 0.85, 1.35], [1.078, 0.116, 0.85, 1.31]])
    gain_on_target: bool = False  # True: the target is the scaled T too (RDNet's in-place scaling)
    reflection_scale_range: list[float] = field(default_factory=lambda: [0.4, 1.0])
    screen_prob: float = 0.7
    overflow_gamma: float = 1.3  # ERRNet's γ of the overflow compensation

    def __post_init__(self) -> None:
        def check(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"reflection synthesis config: {key} = {getattr(self, key)!r}, expected {expected}")

        for key in ("sigma_range", "transmission_scale_range", "reflection_scale_range"):
            value = getattr(self, key)
            check(len(value) == 2 and value[0] <= value[1], key, "a range [low, high] with low <= high")
        check(self.sigma_range[0] > 0, "sigma_range", "sigmas > 0")
        for key in ("transmission_scale_range", "reflection_scale_range"):
            check(getattr(self, key)[0] >= 0, key, "scales >= 0")
        check(len(self.kernel_sizes) > 0 and all(int(k) == k and k >= 1 and k % 2 == 1 for k in self.kernel_sizes),
              "kernel_sizes", "odd sizes >= 1")
        check(len(self.kernel_probs) == len(self.kernel_sizes) and all(0 <= p <= 1 for p in self.kernel_probs)
              and abs(sum(self.kernel_probs) - 1) < 1e-6,
              "kernel_probs", "one probability in [0, 1] per kernel size, summing to 1")
        check(0.0 <= self.screen_prob <= 1.0, "screen_prob", "a probability in [0, 1]")
        check(self.overflow_gamma >= 0, "overflow_gamma", "a value >= 0")
        check(self.transmission_gain in TRANSMISSION_GAINS, "transmission_gain", f"one of {TRANSMISSION_GAINS}")
        check(len(self.truncnorm_gains) == 3 and all(
            len(g) == 4 and g[1] > 0 and g[2] < g[3] for g in self.truncnorm_gains),
            "truncnorm_gains", "three [mean, std > 0, low, high] rows with low < high (R, G, B)")


REFLECTION_PRESETS: dict[str, dict] = {
    # DSRNet data/sirs_dataset.py ReflectionSynthesis (= RDNet data/dataset_sir.py): the defaults.
    "dsrnet": {},
    # RDNet data/new_dataset.py: per-channel truncated-normal gains on T instead of a, target scaled too.
    "rdnet": dict(transmission_gain="truncnorm", gain_on_target=True),
    # ERRNet data/transforms.py ReflectionSythesis_1 as CEILDataset builds it: 11×11 kernel, no a or b,
    # always additive with compensation.
    "errnet": dict(kernel_sizes=[11], kernel_probs=[1.0], transmission_scale_range=[1.0, 1.0],
                   reflection_scale_range=[1.0, 1.0], screen_prob=0.0),
}


def reflection_preset(name: str, **overrides) -> ReflectionSynthesisConfig:
    if name not in REFLECTION_PRESETS:
        raise KeyError(f"unknown reflection synthesis preset {name!r}; available: {sorted(REFLECTION_PRESETS)}")
    return ReflectionSynthesisConfig(**{"preset": name, **REFLECTION_PRESETS[name], **overrides})


@dataclass
class ReflectionParams:
    """One draw of the synthesis."""

    kernel_size: int
    sigma: float
    transmission_gain: np.ndarray  # (3,) per RGB channel; (a, a, a) for the uniform gain
    reflection_scale: float  # b
    screen: bool  # screen blend, else additive with overflow compensation

    def describe(self) -> str:
        gain = self.transmission_gain
        gain_text = f"a={gain[0]:.2f}" if np.all(gain == gain[0]) else "a=(" + ",".join(f"{g:.2f}" for g in gain) + ")"
        return (f"k={self.kernel_size} σ={self.sigma:.2f} {gain_text} b={self.reflection_scale:.2f} "
                f"{'screen' if self.screen else 'additive'}")


@dataclass
class SynthesizedReflection:
    """``blended`` (the network input), ``transmission`` (the target) and ``reflection``: the
    reflection layer as it entered the blend (b·K*R, after the overflow compensation in the
    additive branch). (H, W, 3) float32 in [0, 1]."""

    blended: np.ndarray
    transmission: np.ndarray
    reflection: np.ndarray


def gaussian_kernel_2d(kernel_size: int, sigma: float) -> np.ndarray:
    """(k, k) outer product of OpenCV's normalised 1-D Gaussian, as the three repositories build it."""
    kernel = cv2.getGaussianKernel(int(kernel_size), float(sigma))
    return kernel @ kernel.T


def blur_reflection(reflection: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """Zero-padded 'same' blur of each channel (the kernel is symmetric: correlation = convolution),
    what ``convolve2d(..., mode='same')`` gives in the three repositories."""
    return cv2.filter2D(np.asarray(reflection, np.float32), -1, gaussian_kernel_2d(kernel_size, sigma),
                        borderType=cv2.BORDER_CONSTANT)


def screen_blend(transmission: np.ndarray, reflection: np.ndarray) -> np.ndarray:
    """I = T + R − T·R (DSRNet ``data/sirs_dataset.py``)."""
    return transmission + reflection - transmission * reflection


def additive_blend(transmission: np.ndarray, reflection: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """(I, R'): I = T + R; where it overflows, R' = clip(R − m) and I = clip(T + R') with
    m = γ·(mean of I over its values > 1, − 1) (ERRNet ``data/transforms.py``, ``ReflectionSythesis_1``;
    the mean runs over every overflowing value of every channel)."""
    blended = transmission + reflection
    overflow = blended[blended > 1]
    if overflow.size == 0:
        return blended, reflection
    m = gamma * (float(overflow.mean()) - 1.0)
    reflection = np.clip(reflection - np.float32(m), 0.0, 1.0)
    return np.clip(transmission + reflection, 0.0, 1.0), reflection


def alpha_mix(background, reflection, alpha):
    """I = (1 − α)·B + α·R (GenSIRR's linear superposition). NumPy arrays or torch tensors; α a
    scalar, or one value per batch item ((B,) against (B, ...) images)."""
    if getattr(alpha, "ndim", 0) == 1 and getattr(background, "ndim", 0) > 1:
        alpha = alpha.reshape(-1, *[1] * (background.ndim - 1))  # (B,) -> (B, 1, ..., 1)
    return (1 - alpha) * background + alpha * reflection


class ReflectionSynthesis:
    """``pair = ReflectionSynthesis.from_preset("dsrnet")(T, R, rng)``; see the module docstring."""

    def __init__(self, config: ReflectionSynthesisConfig | None = None):
        self.config = config or ReflectionSynthesisConfig()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ReflectionSynthesis:
        return cls(reflection_preset(name, **overrides))

    def sample_params(self, rng: np.random.Generator) -> ReflectionParams:
        c = self.config
        kernel_size = int(c.kernel_sizes[int(rng.choice(len(c.kernel_sizes), p=c.kernel_probs))])
        sigma = float(rng.uniform(*c.sigma_range))
        if c.transmission_gain == "uniform":
            gain = np.full(3, rng.uniform(*c.transmission_scale_range), dtype=np.float32)
        else:
            from scipy.stats import truncnorm

            gain = np.array([truncnorm.rvs((low - mean) / std, (high - mean) / std, loc=mean, scale=std,
                                           random_state=rng) for mean, std, low, high in c.truncnorm_gains],
                            dtype=np.float32)
        reflection_scale = float(rng.uniform(*c.reflection_scale_range))
        screen = bool(rng.random() < c.screen_prob)
        return ReflectionParams(kernel_size, sigma, gain, reflection_scale, screen)

    def apply(self, transmission: np.ndarray, reflection: np.ndarray,
              params: ReflectionParams) -> SynthesizedReflection:
        if transmission.shape != reflection.shape or transmission.ndim != 3 or transmission.shape[2] != 3:
            raise ValueError(f"expected two (H, W, 3) RGB images of one size, got {transmission.shape} and "
                             f"{reflection.shape}")
        t = np.asarray(transmission, np.float32)
        t_mix = t * params.transmission_gain  # (H, W, 3) * (3,): a·T, or RDNet's per-channel gains
        r_mix = blur_reflection(reflection, params.kernel_size, params.sigma) * np.float32(params.reflection_scale)
        if params.screen:
            blended = screen_blend(t_mix, r_mix)
        else:
            blended, r_mix = additive_blend(t_mix, r_mix, self.config.overflow_gamma)
        target = np.clip(t_mix, 0.0, 1.0) if self.config.gain_on_target else t
        return SynthesizedReflection(np.clip(blended, 0.0, 1.0).astype(np.float32),
                                     np.ascontiguousarray(target, dtype=np.float32), r_mix.astype(np.float32))

    def __call__(self, transmission: np.ndarray, reflection: np.ndarray,
                 rng: np.random.Generator) -> SynthesizedReflection:
        return self.apply(transmission, reflection, self.sample_params(rng))
