"""``latent-pmrf restore``: restore a file or a folder of faces with a trained (latent) PMRF checkpoint."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import Progress

from ..atomic import atomic_write
from ..data.image_io import IMAGE_EXTENSIONS, ImageReadError, is_gray, list_images, read_image, to_uint8
from ..flow.pipeline import RestorationPipeline, load_restoration
from ..models.swinir import pad_to_multiple
from ..seeding import torch_generator

if TYPE_CHECKING:
    from .restore_faces import FaceOptions


DEFAULT_MAX_PIXELS = 2048 * 2048  # a global-attention level's memory grows with the square of this
EXIT_PARTIAL = 3  # documented exit code: some input files failed (the others were written)


@dataclass
class RestoreSummary:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    chosen_branch: dict[Path, int] = field(default_factory=dict)  # early branching: written file -> its draw
    existing: list[Path] = field(default_factory=list)  # outputs kept with skip_existing


def plan_outputs(files: list[Path], targets: list[Path], output: Path, overwrite: bool = False,
                 skip_existing: bool = False) -> list[int]:
    """Before any work: the output folder is writable; no two inputs share an output name (a.jpg and
    a.png), no output overwrites an input; existing outputs are refused unless ``overwrite``, or
    skipped with ``skip_existing``. Returns the indices of the files to process."""
    if overwrite and skip_existing:
        raise ValueError("--overwrite and --skip-existing exclude each other")
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file, not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--output {output} is not writable: {err.strerror or err}") from err
    seen: dict[Path, Path] = {}
    for path, target in zip(files, targets):
        if target in seen:
            raise ValueError(f"{seen[target]} and {path} would both be written to {target}: rename one of them")
        seen[target] = path
    inputs = {p.resolve() for p in files}
    clash = next((t for t in targets if t.resolve() in inputs), None)
    if clash is not None:
        raise ValueError(f"{clash} is an input image; choose an --output folder outside the input")
    existing = [i for i, t in enumerate(targets) if t.exists()]
    if existing and not (overwrite or skip_existing):
        raise ValueError(f"{len(existing)} output(s) already exist, e.g. {targets[existing[0]]}: pass --overwrite "
                         "to replace them or --skip-existing to keep them and do the rest")
    keep = set(existing) if skip_existing else set()
    return [i for i in range(len(files)) if i not in keep]


def png_levels(image: torch.Tensor, gray: bool = False) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> the 8-bit (H, W, 3) levels ``save_png`` writes (``gray``: (H, W), the
    BT.601 luma)."""
    arr = to_uint8(image)
    if gray:
        arr = np.round(arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    return arr


def save_png(image: torch.Tensor, path: Path, gray: bool = False) -> None:
    """(3, H, W) in [-1, 1] -> 8-bit RGB PNG (``gray``: one channel, the BT.601 luma), atomically."""
    arr = png_levels(image, gray)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def pad_image(x: torch.Tensor, multiple: int, min_side: int) -> torch.Tensor:
    """(B, C, H, W) padded at the bottom/right to multiples of ``multiple`` and to at least
    ``min_side`` (the smallest input the model takes), reflecting where it can."""
    x = pad_to_multiple(x, multiple)
    pad_h, pad_w = max(0, min_side - x.shape[-2]), max(0, min_side - x.shape[-1])
    return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def restore_batch(pipeline: RestorationPipeline, images: list[np.ndarray], generators: list[torch.Generator],
                  steps: int, *, device: str, sampler: str | None = None, task: str | None = None,
                  score: Callable[[torch.Tensor], torch.Tensor] | None = None, branches: int = 1,
                  branch_steps: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int | None]]:
    """Images (H, W, 3) in [0, 1] of one padded size (``pad_image``) restored as one batch, image i
    drawing from ``generators[i]``: each one's restoration and posterior mean, (3, H, W) in [-1, 1]
    cropped back to its size, and the draw early branching chose for it (``score``; else None)."""
    x = torch.stack([pad_image(torch.from_numpy(im).permute(2, 0, 1)[None] * 2 - 1, pipeline.size_multiple,
                               pipeline.min_side)[0] for im in images]).to(device)
    if score is None:
        restored, posterior_mean = pipeline.restore(x, steps, generator=generators, sampler=sampler, task=task)
        chosen = [None] * len(images)
    else:
        restored, posterior_mean, chosen_draws = pipeline.restore_early_branching(
            x, score, branches, steps, branch_steps, generator=generators, sampler=sampler, task=task)
        chosen = [int(branch) for branch in chosen_draws]
    sizes = [im.shape[:2] for im in images]
    return ([out[:, :h, :w] for out, (h, w) in zip(restored, sizes)],
            [mean[:, :h, :w] for mean, (h, w) in zip(posterior_mean, sizes)], chosen)


def input_files(source: Path) -> tuple[Path, list[Path]]:
    if source.is_dir():
        return source, list_images(source)
    if source.is_file():
        if source.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"{source}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        return source.parent, [source]
    raise FileNotFoundError(f"input not found: {source}")


def run_in_size_batches(items: list[tuple[object, Path]], multiple: int, batch_size: int,
                        run: Callable[[list[tuple[object, np.ndarray]]], None], summary: RestoreSummary,
                        console: Console, description: str, min_side: int = 1,
                        max_pixels: int | None = None) -> None:
    """Read each ``(payload, path)`` as it comes (an unreadable file, or one above ``max_pixels``,
    goes to ``summary.failed``); images of equal padded size (``pad_image``) wait in a batch, and
    ``run`` gets each full batch of ``(payload, image)`` and then the partial ones: at most one
    partial batch per distinct size is held in memory."""
    pending: dict[tuple[int, int], list] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(description, total=len(items))
        for payload, path in items:
            try:
                image = read_image(path, max_pixels)
            except ImageReadError as err:
                summary.failed.append((path, str(err)))
                progress.advance(task)
                continue
            key = tuple(max(-(-side // multiple) * multiple, min_side) for side in image.shape[:2])
            batch = pending.setdefault(key, [])
            batch.append((payload, image))
            if len(batch) == batch_size:
                run(pending.pop(key))
                progress.advance(task, batch_size)
        for batch in pending.values():
            run(batch)
            progress.advance(task, len(batch))


def report_failures(summary: RestoreSummary, console: Console) -> None:
    for _, reason in summary.failed:
        console.print(f"[yellow]skipped[/yellow] {reason}", soft_wrap=True)
    if summary.failed:
        console.print(f"[yellow]{len(summary.failed)} file(s) could not be read[/yellow]")


def restore(ckpt: str | Path, source: str | Path, output: str | Path, steps: int = 25, seed: int = 0,
            batch_size: int = 1, device: str = "cpu", save_posterior_mean: bool = False,
            console: Console | None = None, sampler: str | None = None, branches: int = 1, branch_steps: int = 1,
            scorer: str | None = None, task: str | None = None, faces: FaceOptions | None = None,
            overwrite: bool = False, skip_existing: bool = False, keep_gray: bool = True,
            max_pixels: int | None = DEFAULT_MAX_PIXELS, compile: bool = False) -> RestoreSummary:
    """Restored images go to OUTPUT/restored/<relative path>.png (input size; gray, RGBA and
    16-bit inputs are read as RGB and written as 8-bit RGB), f(y) to OUTPUT/posterior_mean/ with
    ``save_posterior_mean``. Image i uses a generator seeded by (seed, i), so results do not
    depend on the batch size. An unreadable file is reported and skipped; the rest still run.
    ``sampler`` chooses the Euler time grid (default: the checkpoint config's). ``branches`` > 1:
    early-branching selection (``RestorationPipeline.restore_early_branching``) of that many draws
    after ``branch_steps`` steps by the scorer named ``scorer`` (``flow/scorers.py``), which is
    built, and its weights checked, before the checkpoint is read. ``task``: what to restore with a
    multi-task model (``bfr``, ``sirr``; default its first task); a model not trained for it is an
    error before any image is read. ``faces``: whole photos instead of aligned faces
    (``restore_faces.py``; its detector's weights are checked before the checkpoint is read).

    Before any work: the output folder must be writable, two inputs may not share an output name,
    and existing outputs are refused unless ``overwrite`` (or kept with ``skip_existing``). Images
    smaller than the model's smallest input are padded and cropped back; one above ``max_pixels``
    is reported and skipped without being decoded. A gray input gives a gray PNG (``keep_gray``)."""
    console = console or Console(stderr=True)
    root, files = input_files(Path(source))
    output = Path(output)
    if faces is None:
        targets = [output / "restored" / p.relative_to(root).with_suffix(".png") for p in files]
        todo = plan_outputs(files, targets, output, overwrite, skip_existing)
    score = early_branching_scorer(branches, branch_steps, steps, scorer, device)
    detector = faces.build_detector(device) if faces is not None else None
    pipeline = load_restoration(ckpt).to(device)
    if compile:  # torch.compile in place: the first image of each size compiles, the rest run faster
        pipeline.compile_nets()
    pipeline.task_id(task)  # an unknown task fails here, naming the model's tasks
    if faces is not None:
        from .restore_faces import restore_faces

        return restore_faces(pipeline, detector, root, files, output, faces, steps=steps, seed=seed,
                             batch_size=batch_size, device=device, save_posterior_mean=save_posterior_mean,
                             sampler=sampler, task=task, score=score, branches=branches, branch_steps=branch_steps,
                             console=console)
    summary = RestoreSummary(existing=[targets[i] for i in range(len(files)) if i not in set(todo)])
    multiple, min_side = pipeline.size_multiple, pipeline.min_side

    def run(batch: list[tuple[tuple[int, Path], np.ndarray]]) -> None:
        gens = [torch_generator(seed, i, device=device) for (i, _), _ in batch]
        restored, posterior_mean, chosen = restore_batch(
            pipeline, [im for _, im in batch], gens, steps, device=device, sampler=sampler, task=task, score=score,
            branches=branches, branch_steps=branch_steps)
        for ((_, path), im), out, mean, branch in zip(batch, restored, posterior_mean, chosen):
            rel = path.relative_to(root).with_suffix(".png")
            gray = keep_gray and is_gray(im)
            save_png(out, output / "restored" / rel, gray)
            if save_posterior_mean:
                save_png(mean, output / "posterior_mean" / rel, gray)
            summary.written.append(output / "restored" / rel)
            if branch is not None:
                summary.chosen_branch[output / "restored" / rel] = branch

    run_in_size_batches([((i, files[i]), files[i]) for i in todo], multiple, batch_size, run, summary, console,
                        "restoring", min_side, max_pixels)
    if summary.existing:
        console.print(f"kept {len(summary.existing)} existing output(s) (--skip-existing)")
    console.print(f"restored {len(summary.written)} image(s) into {output / 'restored'}"
                  + (f"; posterior means in {output / 'posterior_mean'}" if save_posterior_mean else ""))
    if summary.chosen_branch:
        counts = np.bincount(list(summary.chosen_branch.values()), minlength=branches)
        console.print(f"early branching ({branches} draws, {branch_steps} step(s), scorer {scorer}): images per "
                      "chosen draw " + " ".join(f"{j}:{n}" for j, n in enumerate(counts)))
    report_failures(summary, console)
    return summary


def early_branching_scorer(branches: int, branch_steps: int, steps: int, scorer: str | None, device: str,
                           build: Callable[[str, str], Callable[[torch.Tensor], torch.Tensor]] | None = None
                           ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The scorer of ``restore --branches k --scorer NAME`` (None for plain restoration), after
    checking the options together; ``build(name, device)`` makes it (default
    ``flow.scorers.build_scorer``; the demo passes one that keeps what it built)."""
    if branches < 1:
        raise ValueError(f"--branches must be >= 1, got {branches}")
    if branches == 1:
        if scorer is not None:
            raise ValueError("--scorer selects among early branches: give --branches > 1 with it")
        return None
    if scorer is None:
        raise ValueError(f"--branches {branches} needs --scorer NAME to choose among the draws")
    if not 1 <= branch_steps <= steps:
        raise ValueError(f"--branch-steps must be in [1, --steps={steps}], got {branch_steps}")
    if build is None:
        from ..flow.scorers import build_scorer as build
    return build(scorer, device)
