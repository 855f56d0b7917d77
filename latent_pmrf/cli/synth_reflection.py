"""``latent-pmrf synth-reflection``: a synthetic SIRR set in the field's layout.

    OUTPUT/blended/NAME.png             the photo through glass (the network input)
    OUTPUT/transmission_layer/NAME.png  the target
    OUTPUT/reflection_layer/NAME.png    the reflection as it entered the blend
    OUTPUT/synthesis.csv                per image: background, reflection, drawn parameters

Image i (NAME = i as five digits) blends background i mod (number of backgrounds) with a reflection
image drawn by the generator of ``(seed, i)`` (``SyntheticReflectionDataset`` in validation mode:
no flip or rescale; ``--size`` centre-crops both, otherwise the background keeps its size and a
random window of the reflection is fitted to it). The same arguments write the same bytes. 8-bit
PNGs (``to_uint8``), every file written atomically.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..atomic import atomic_write, write_text_atomic
from ..data.bfr_datasets import item_rng
from ..data.image_io import to_uint8
from ..data.reflection import REFLECTION_PRESETS, ReflectionSynthesis
from ..data.sirr_datasets import BLENDED, REFLECTION, TRANSMISSION, SIRRAugmentConfig, SyntheticReflectionDataset

RECORD_COLUMNS = ("name", "background", "reflection", "kernel_size", "sigma", "transmission_gain",
                  "reflection_scale", "blend")


def _write_png(path: Path, image) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(to_uint8(image, value_range=(0, 1))).save(tmp, format="PNG"))


def synth_reflection(background: str | Path, reflection: str | Path, output: str | Path, n: int, seed: int = 0,
                     preset: str = "dsrnet", size: int | None = None) -> Path:
    """Write ``n`` blended/transmission/reflection triplets to ``output``; returns ``output``."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if preset not in REFLECTION_PRESETS:
        raise ValueError(f"unknown --preset {preset!r}; available: {sorted(REFLECTION_PRESETS)}")
    same = Path(background).resolve() == Path(reflection).resolve()
    dataset = SyntheticReflectionDataset([(background, None)], None if same else [(reflection, None)],
                                         ReflectionSynthesis.from_preset(preset),
                                         SIRRAugmentConfig(crop_size=size, short_side_range=None), seed=seed,
                                         train=False)
    output = Path(output)
    for folder in (BLENDED, TRANSMISSION, REFLECTION):
        (output / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        sample = dataset.synthesize(i % len(dataset), item_rng(seed, i))
        name = f"{i:05d}.png"
        for folder, image in ((BLENDED, sample.images.blended), (TRANSMISSION, sample.images.transmission),
                              (REFLECTION, sample.images.reflection)):
            _write_png(output / folder / name, image)
        p = sample.params
        rows.append(dict(name=name, background=str(sample.background), reflection=str(sample.reflection),
                         kernel_size=p.kernel_size, sigma=f"{p.sigma:.6g}",
                         transmission_gain=" ".join(f"{g:.6g}" for g in p.transmission_gain),
                         reflection_scale=f"{p.reflection_scale:.6g}", blend="screen" if p.screen else "additive"))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RECORD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(output / "synthesis.csv", buffer.getvalue())
    return output
