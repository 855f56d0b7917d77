"""``latent-pmrf restore``: restore a file or a folder of faces with a trained (latent) PMRF checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import Progress

from ..atomic import atomic_write
from ..data.image_io import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, to_uint8
from ..flow.pipeline import load_restoration
from ..models.swinir import pad_to_multiple
from ..seeding import torch_generator


@dataclass
class RestoreSummary:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def save_png(image: torch.Tensor, path: Path) -> None:
    """(3, H, W) in [-1, 1] -> 8-bit RGB PNG, written atomically."""
    arr = to_uint8(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


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
                        console: Console, description: str) -> None:
    """Read each ``(payload, path)`` as it comes (an unreadable file goes to ``summary.failed``);
    images of equal size padded to ``multiple`` wait in a batch, and ``run`` gets each full batch
    of ``(payload, image)`` and then the partial ones: at most one partial batch per distinct size
    is held in memory."""
    pending: dict[tuple[int, int], list] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(description, total=len(items))
        for payload, path in items:
            try:
                image = read_image(path)
            except ImageReadError as err:
                summary.failed.append((path, str(err)))
                progress.advance(task)
                continue
            key = (-(-image.shape[0] // multiple), -(-image.shape[1] // multiple))
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
        console.print(f"[yellow]skipped[/yellow] {reason}")
    if summary.failed:
        console.print(f"[yellow]{len(summary.failed)} file(s) could not be read[/yellow]")


def restore(ckpt: str | Path, source: str | Path, output: str | Path, steps: int = 25, seed: int = 0,
            batch_size: int = 1, device: str = "cpu", save_posterior_mean: bool = False,
            console: Console | None = None, sampler: str | None = None) -> RestoreSummary:
    """Restored images go to OUTPUT/restored/<relative path>.png (input size; gray, RGBA and
    16-bit inputs are read as RGB and written as 8-bit RGB), f(y) to OUTPUT/posterior_mean/ with
    ``save_posterior_mean``. Image i uses a generator seeded by (seed, i), so results do not
    depend on the batch size. An unreadable file is reported and skipped; the rest still run.
    ``sampler`` chooses the Euler time grid (default: the checkpoint config's)."""
    console = console or Console(stderr=True)
    pipeline = load_restoration(ckpt).to(device)
    root, files = input_files(Path(source))
    output = Path(output)
    summary = RestoreSummary()
    multiple = pipeline.size_multiple

    def run(batch: list[tuple[tuple[int, Path], np.ndarray]]) -> None:
        x = torch.stack([pad_to_multiple(torch.from_numpy(im).permute(2, 0, 1)[None] * 2 - 1, multiple)[0]
                         for _, im in batch]).to(device)
        gens = [torch_generator(seed, i, device=device) for (i, _), _ in batch]
        restored, posterior_mean = pipeline.restore(x, steps, generator=gens, sampler=sampler)
        for ((_, path), im), out, mean in zip(batch, restored, posterior_mean):
            h, w = im.shape[:2]
            rel = path.relative_to(root).with_suffix(".png")
            save_png(out[:, :h, :w], output / "restored" / rel)
            if save_posterior_mean:
                save_png(mean[:, :h, :w], output / "posterior_mean" / rel)
            summary.written.append(output / "restored" / rel)

    run_in_size_batches([((i, path), path) for i, path in enumerate(files)], multiple, batch_size, run, summary,
                        console, "restoring")
    console.print(f"restored {len(summary.written)} image(s) into {output / 'restored'}"
                  + (f"; posterior means in {output / 'posterior_mean'}" if save_posterior_mean else ""))
    report_failures(summary, console)
    return summary
