"""``latent-pmrf restore --faces detect``: whole photos in, every face restored and pasted back.

Per photo: detect faces (``faces/detection.py``) → keep those of at least ``min_face_size`` pixels
(only the central one with ``only_center_face``) → align each by its 5 landmarks to the FFHQ 512²
template (``faces/alignment.py``) → restore the crops with the pipeline's ``restore``, face j of
image i drawing from ``torch_generator(seed, i, j)`` → paste them back into the photo enlarged
``upscale`` times by bicubic (``faces/paste.py``). Writes OUTPUT/restored/<rel>.png (the photo, its
size × upscale, RGB), OUTPUT/faces/aligned/<rel>_<j>.png and OUTPUT/faces/restored/<rel>_<j>.png
(faces numbered left to right; f(y) of each crop in OUTPUT/faces/posterior_mean/ with
``save_posterior_mean``). A photo without a face is reported and copied through (enlarged like the
others) or, with ``skip_no_face``, not written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from ..data.image_io import ImageReadError, read_image
from ..faces.alignment import alignment_matrix, warp_to_template
from ..faces.detection import DETECTORS, Detector, build_detector, select_faces
from ..faces.paste import paste_face, upscale_background
from ..flow.pipeline import RestorationPipeline
from ..seeding import torch_generator
from .restore import RestoreSummary, report_failures, restore_batch, save_png


@dataclass
class FaceOptions:
    """What ``restore --faces detect`` does besides restoring; checked when built."""

    detector: str = "mtcnn"
    only_center_face: bool = False
    upscale: int = 1
    min_face_size: int = 20  # pixels, the shorter side of the detected box
    skip_no_face: bool = False  # a photo without a face is copied through unless this is set

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown face detector {self.detector!r}; choose one of {', '.join(DETECTORS)}")
        if isinstance(self.upscale, bool) or not isinstance(self.upscale, int) or self.upscale < 1:
            raise ValueError(f"--upscale must be an integer >= 1, got {self.upscale!r}")
        if self.min_face_size < 1:
            raise ValueError(f"--min-face-size must be >= 1 pixel, got {self.min_face_size}")

    def build_detector(self, device: str) -> Detector:
        return build_detector(self.detector, device, self.min_face_size)


@dataclass
class FaceRestoreSummary(RestoreSummary):
    faces: dict[Path, int] = field(default_factory=dict)  # written photo -> number of faces pasted into it
    no_face: list[Path] = field(default_factory=list)  # inputs in which no face was kept


def _save_rgb(image: np.ndarray, path: Path) -> None:
    """(H, W, 3) float in [0, 1] -> 8-bit PNG, as ``save_png`` writes."""
    save_png(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) * 2 - 1, path)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) float32 in [0, 1]."""
    return ((tensor.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()


def aligned_faces(image: np.ndarray, detector: Detector, options: FaceOptions
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The faces of an (H, W, 3) image in [0, 1] that ``options`` keep, left to right: their aligned
    FFHQ 512² crops and the alignment matrices that paste them back."""
    height, width = image.shape[:2]
    faces = select_faces(detector.detect(image), height, width, options.min_face_size, options.only_center_face)
    matrices = [m for m in (alignment_matrix(face.landmarks) for face in faces) if m is not None]
    return [warp_to_template(image, m) for m in matrices], matrices


def restore_faces(pipeline: RestorationPipeline, detector: Detector, root: Path, files: list[Path], output: Path,
                  options: FaceOptions, *, steps: int, seed: int, batch_size: int, device: str,
                  save_posterior_mean: bool, sampler: str | None, task: str | None,
                  score: Callable[[torch.Tensor], torch.Tensor] | None, branches: int, branch_steps: int,
                  console: Console) -> FaceRestoreSummary:
    """Restore the faces of ``files`` (paths under ``root``), the crops in batches of ``batch_size``;
    ``score``: early-branching selection as in ``restore``. An unreadable file is reported and
    skipped; the rest still run."""
    summary = FaceRestoreSummary()

    def restore_crops(crops: list[np.ndarray], keys: list[tuple[int, ...]]):
        return restore_batch(pipeline, crops, [torch_generator(*key, device=device) for key in keys], steps,
                             device=device, sampler=sampler, task=task, score=score, branches=branches,
                             branch_steps=branch_steps)

    def restore_photo(i: int, path: Path, image: np.ndarray) -> None:
        rel = path.relative_to(root).with_suffix("")
        target = output / "restored" / rel.with_suffix(".png")
        crops, matrices = aligned_faces(image, detector, options)
        canvas = upscale_background(image, options.upscale)
        if not matrices:
            summary.no_face.append(path)
            console.print(f"[yellow]no face[/yellow] in {path}: " + ("skipped" if options.skip_no_face
                                                                     else "copied through"))
            if not options.skip_no_face:
                _save_rgb(canvas, target)
                summary.written.append(target)
                summary.faces[target] = 0
            return
        for start in range(0, len(crops), batch_size):
            js = range(start, min(start + batch_size, len(crops)))
            restored, posterior_mean, chosen = restore_crops([crops[j] for j in js], [(seed, i, j) for j in js])
            for j, out, mean, branch in zip(js, restored, posterior_mean, chosen):
                name = rel.parent / f"{rel.name}_{j:02d}.png"
                face = to_image(out)
                _save_rgb(crops[j], output / "faces" / "aligned" / name)
                _save_rgb(face, output / "faces" / "restored" / name)
                if save_posterior_mean:
                    _save_rgb(to_image(mean), output / "faces" / "posterior_mean" / name)
                if branch is not None:
                    summary.chosen_branch[output / "faces" / "restored" / name] = branch
                paste_face(canvas, face, matrices[j], options.upscale)
        _save_rgb(canvas, target)
        summary.written.append(target)
        summary.faces[target] = len(crops)

    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("restoring faces", total=len(files))
        for i, path in enumerate(files):
            try:
                image = read_image(path)
            except ImageReadError as err:
                summary.failed.append((path, str(err)))
            else:
                restore_photo(i, path, image)
            progress.advance(bar)
    restored_faces = sum(summary.faces.values())
    console.print(f"restored {restored_faces} face(s) in {sum(n > 0 for n in summary.faces.values())} photo(s) "
                  f"into {output / 'restored'} (upscale {options.upscale}, detector {options.detector}); crops in "
                  f"{output / 'faces'}" + (f"; {len(summary.no_face)} photo(s) without a face "
                                           f"({'skipped' if options.skip_no_face else 'copied through'})"
                                           if summary.no_face else ""))
    report_failures(summary, console)
    return summary
