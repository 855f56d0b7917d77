"""What every data_prep script shares: arguments, the job list, a process pool with a progress bar,
the manifest, and the rule that makes a run resumable.

A job turns one input image into output files. It is *done* when each of its output files exists
and has its row in ``<out>/manifest.csv``; a restarted run skips done jobs and redoes the others
(an output file without a row, left by a killed run, is written again). Output files and the
settings stamp are written atomically (``latent_pmrf.atomic``); the manifest is appended one job at
a time (flushed and fsynced), so an interrupted run keeps every finished row. At the end of a run
the manifest is rewritten, atomically, sorted by path with one row per file (the last row of a
path wins); a torn last line, which only a power cut can leave, is dropped on the next start.

``<out>/data_prep.json`` records the settings that decide the outputs (size, seed, crop ...): a run
into a folder built with other settings is refused rather than mixing two datasets. An unreadable
input is reported by name and counted, and the run goes on; the summary says how many inputs were
written, skipped as already done, and failed. Inputs that failed or yield nothing leave no row, so
every run tries them again (and a dry run counts them as to do).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from latent_pmrf.atomic import atomic_write, write_text_atomic
from latent_pmrf.data.image_io import ImageReadError, list_images

MANIFEST_NAME = "manifest.csv"
SETTINGS_NAME = "data_prep.json"
BASE_COLUMNS = ("path", "sha256", "width", "height", "source")
PNG_COMPRESSION = 3  # zlib level of BasicSR's extract_subimages: fast, a few % larger than level 9
MAX_LISTED_FAILURES = 20  # in the final summary
STALE_TEMPORARY = re.compile(r"\..+\.tmp-\d+")  # latent_pmrf.atomic's temporary names


class DataPrepError(RuntimeError):
    """A problem to fix before running (missing weights, a folder built with other settings, a
    damaged manifest); the command line prints it without a traceback."""


# ---------------------------------------------------------------------------------- arguments
def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def make_parser(script: str, doc: str, input_help: str) -> argparse.ArgumentParser:
    """``--input``, ``--out``, ``--workers``, ``--dry-run``; ``doc`` (the module docstring) is the
    description shown by ``--help``."""
    parser = argparse.ArgumentParser(prog=f"python -m data_prep.{script}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, metavar="DIR", help=input_help)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help=f"output folder; {MANIFEST_NAME} and {SETTINGS_NAME} are written in it")
    parser.add_argument("--workers", type=non_negative_int, default=default_workers(),
                        help="worker processes (default: min(8, CPU count) = %(default)s); 0 runs in this process")
    parser.add_argument("--dry-run", action="store_true",
                        help="count the inputs that are done and to do, and write nothing")
    return parser


# ---------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One input image. ``index``: its position in sorted path order; ``key``: its path relative to
    the input folder (the manifest's ``source``); ``outputs``: the files it writes, relative to the
    output folder (empty where they are only known once the image is read)."""

    index: int
    source: Path
    key: str
    outputs: tuple[str, ...] = ()


@dataclass
class Result:
    job: Job
    rows: list[dict] = field(default_factory=list)  # one manifest row per file written
    error: str | None = None  # the input could not be used; the message names it
    skipped: str | None = None  # the input is fine but yields nothing (lsdir: smaller than the crop)


@dataclass
class Summary:
    """Counts of inputs (jobs) unless named otherwise."""

    total: int = 0
    done_before: int = 0  # skipped: already done
    to_do: int = 0
    written: int = 0
    files: int = 0  # output files written in this run
    skipped: int = 0  # inputs that yield nothing
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def list_jobs(input_dir: Path, out_dir: Path, limit: int | None,
              outputs: Callable[[str], tuple[str, ...]]) -> list[Job]:
    """A job per image under ``input_dir`` in sorted path order (the first ``limit``);
    ``outputs(key)`` names its output files. Two inputs writing the same file are an error, and so
    is an output folder inside the input folder (its files would become inputs)."""
    if out_dir.resolve().is_relative_to(input_dir.resolve()):
        raise DataPrepError(f"the output folder {out_dir} is inside the input folder {input_dir}; choose another --out")
    jobs, writer_of = [], {}
    for index, path in enumerate(list_images(input_dir, limit)):
        key = path.relative_to(input_dir).as_posix()
        job = Job(index, path, key, outputs(key))
        for output in job.outputs:
            if output in writer_of:
                raise DataPrepError(f"inputs {writer_of[output]} and {key} under {input_dir} would both be "
                                    f"written to {output}; rename or remove one of them")
            writer_of[output] = key
        jobs.append(job)
    return jobs


def existing_files(out_dir: Path) -> set[str]:
    """Paths (relative to ``out_dir``, POSIX) of every file under it; one directory walk instead of
    a ``stat`` per expected output."""
    found = set()
    for dirpath, _, filenames in os.walk(out_dir):
        folder = Path(dirpath).relative_to(out_dir)
        found.update((folder / name).as_posix() for name in filenames)
    return found


def remove_stale_temporaries(out_dir: Path, existing: set[str]) -> None:
    """Delete the ``.<name>.tmp-<pid>`` files that a killed run's atomic writes left behind."""
    for rel in [p for p in existing if STALE_TEMPORARY.fullmatch(Path(p).name)]:
        (out_dir / rel).unlink(missing_ok=True)
        existing.discard(rel)


def is_done(job: Job, manifest: Manifest, existing: set[str]) -> bool:
    return bool(job.outputs) and all(p in manifest and p in existing for p in job.outputs)


def check_settings(out_dir: Path, script: str, settings: dict, write: bool) -> None:
    """Refuse an output folder built by another script or with other ``settings``; record them in
    a new folder when ``write``."""
    stamp = {"script": script, **settings}
    path = out_dir / SETTINGS_NAME
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataPrepError(f"cannot read the settings stamp {path}: {err}") from err
        if previous != stamp:
            diffs = "; ".join(f"{key}: {previous.get(key)!r} there, {stamp.get(key)!r} now"
                              for key in sorted(set(previous) | set(stamp)) if previous.get(key) != stamp.get(key))
            raise DataPrepError(f"{out_dir} was built with other settings ({diffs}); "
                                f"run with the same settings to resume, or choose another --out")
    elif write:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(stamp, indent=2) + "\n")


# ---------------------------------------------------------------------------------- manifest
class Manifest:
    """``<out>/manifest.csv``: one row per output file, keyed by ``path`` (relative to the output
    folder); see the module docstring for how it survives interruptions. ``Manifest.load`` only
    reads; ``with manifest:`` opens it for ``append`` and compacts it on exit."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = tuple(columns)
        self._rows: dict[str, tuple[str, ...]] = {}
        self._torn_bytes = 0
        self._needs_compaction = False
        self._file = None

    @classmethod
    def load(cls, path: Path, columns: Sequence[str]) -> Manifest:
        manifest = cls(path, columns)
        if not manifest.path.is_file():
            return manifest
        data = manifest.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        manifest._torn_bytes = len(data) - complete
        try:
            text = data[:complete].decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataPrepError(f"manifest {manifest.path} is not UTF-8 text ({err}): delete it to rebuild") from err
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            return manifest
        if tuple(header) != manifest.columns:
            raise DataPrepError(f"manifest {manifest.path} has the columns {header}, expected "
                                f"{list(manifest.columns)}: it was written by another script or version; "
                                f"choose another --out")
        for values in reader:
            if len(values) != len(manifest.columns):
                raise DataPrepError(f"manifest {manifest.path}, line {reader.line_num}: {len(values)} fields, expected "
                                    f"{len(manifest.columns)}; delete that line (its file will be redone)")
            manifest._needs_compaction |= values[0] in manifest._rows
            manifest._rows[values[0]] = tuple(values)
        return manifest

    def __contains__(self, path: str) -> bool:
        return path in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, path: str) -> dict[str, str] | None:
        values = self._rows.get(path)
        return None if values is None else dict(zip(self.columns, values, strict=True))

    def rows(self) -> Iterator[dict[str, str]]:
        for values in self._rows.values():
            yield dict(zip(self.columns, values, strict=True))

    def __enter__(self) -> Manifest:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._torn_bytes:
            os.truncate(self.path, self.path.stat().st_size - self._torn_bytes)
            self._torn_bytes = 0
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        if new:
            self._write([self.columns])
        return self

    def append(self, rows: Iterable[dict]) -> None:
        """Add (or replace, by path) rows; they are on disk when this returns."""
        records = []
        for row in rows:
            unknown = set(row) - set(self.columns)
            if unknown:
                raise ValueError(f"manifest {self.path}: unknown column(s) {sorted(unknown)}")
            records.append(tuple(str(row.get(column, "")) for column in self.columns))
        if not records:
            return
        self._write(records)
        for values in records:
            self._needs_compaction = True
            self._rows[values[0]] = values

    def _write(self, records: Iterable[Sequence[str]]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(records)
        self._file.write(buffer.getvalue())
        self._file.flush()
        os.fsync(self._file.fileno())

    def __exit__(self, *exc_info) -> None:
        self._file.close()
        self._file = None
        if self._needs_compaction:
            def write(tmp: Path) -> None:
                with open(tmp, "w", encoding="utf-8", newline="") as handle:
                    writer = csv.writer(handle, lineterminator="\n")
                    writer.writerow(self.columns)
                    writer.writerows(self._rows[path] for path in sorted(self._rows))

            atomic_write(self.path, write)
            self._needs_compaction = False


# ---------------------------------------------------------------------------------- images
def resize_square(image: np.ndarray, size: int, source: Path) -> np.ndarray:
    """A square uint8 RGB image at ``size``×``size`` by antialiased bicubic (PIL ``BICUBIC``: its
    kernel widens with the reduction factor, as MATLAB's ``imresize``); see ``data_prep.ffhq`` for
    why. An image already at ``size`` is returned as is; a smaller or non-square one is an error."""
    height, width = image.shape[:2]
    if height != width:
        raise ValueError(f"{source} is {width}x{height}; expected a square (aligned face) image")
    if height < size:
        raise ValueError(f"{source} is {width}x{height}, smaller than {size}x{size}; refusing to upscale")
    if height == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def encode_png(image: np.ndarray) -> bytes:
    """uint8 RGB (H, W, 3) -> 8-bit PNG bytes."""
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]),
                              [int(cv2.IMWRITE_PNG_COMPRESSION), PNG_COMPRESSION])
    if not ok:
        raise RuntimeError(f"OpenCV failed to PNG-encode a {image.shape} image")
    return buffer.tobytes()


def write_png(out_dir: Path, rel: str, image: np.ndarray, source_key: str) -> dict:
    """Write ``image`` (uint8 RGB) atomically to ``out_dir / rel``; its manifest row (base columns)."""
    data = encode_png(image)
    path = out_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return dict(path=rel, sha256=hashlib.sha256(data).hexdigest(), width=image.shape[1], height=image.shape[0],
                source=source_key)


# ---------------------------------------------------------------------------------- running
def _guarded(process: Callable[[Job], Result], job: Job) -> Result:
    """``process(job)``; a bad input (unreadable, wrong size) becomes a failed result naming it."""
    try:
        return process(job)
    except (ImageReadError, ValueError) as err:
        message = str(err)
        return Result(job, error=message if str(job.source) in message else f"{job.source}: {message}")


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV's own threads would oversubscribe


def _pool_context(process: Callable[[Job], Result]) -> BaseContext:
    """Workers are never forked from the caller, whose threads (OpenCV's pool, the progress bar,
    torch) a fork would copy mid-state: under pytest, a worker forked after OpenCV had run in the
    parent hung for good in ``cv2.setNumThreads`` (``pthread_cond_destroy``). The fork server is a
    clean single-threaded process that imports ``process``'s module once for all workers."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload([getattr(process, "func", process).__module__])
    return context


def _results(jobs: Sequence[Job], process: Callable[[Job], Result], workers: int) -> Iterator[Result]:
    guarded = partial(_guarded, process)
    if workers == 0 or not jobs:
        yield from map(guarded, jobs)
        return
    with _pool_context(process).Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
        yield from pool.imap_unordered(guarded, jobs)


def make_console() -> Console:
    """Messages are not wrapped (long paths stay whole in logs); the progress bar fits the terminal."""
    return Console(soft_wrap=True)


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


def run_jobs(jobs: Sequence[Job], process: Callable[[Job], Result], manifest: Manifest, workers: int,
             label: str, summary: Summary, console: Console) -> None:
    """Run ``process`` (a picklable module-level function or ``functools.partial``) on every job
    with ``workers`` processes, appending each finished job's rows to the open ``manifest`` as it
    arrives, and counting into ``summary``. Outputs depend only on the job, never on the order."""
    with progress_bar(console) as progress:
        task = progress.add_task(label, total=len(jobs))
        for result in _results(jobs, process, workers):
            if result.error is not None:
                summary.failed += 1
                summary.failures.append(result.error)
                progress.console.print(f"failed: {result.error}", style="red", markup=False, highlight=False)
            elif result.skipped is not None:
                summary.skipped += 1
                progress.console.print(f"skipped: {result.skipped}", style="yellow", markup=False, highlight=False)
            else:
                manifest.append(result.rows)
                summary.written += 1
                summary.files += len(result.rows)
            progress.advance(task)


def report_plan(console: Console, label: str, summary: Summary, dry_run: bool) -> None:
    console.print(f"{label}: {summary.total} inputs, {summary.done_before} already done, {summary.to_do} to do"
                  + (" (dry run: nothing written)" if dry_run else ""), highlight=False)


def report_summary(console: Console, label: str, summary: Summary) -> None:
    skipped = f", {summary.skipped} skipped (yield nothing)" if summary.skipped else ""
    console.print(f"{label}: {summary.written} written ({summary.files} files), {summary.done_before} skipped as "
                  f"already done{skipped}, {summary.failed} failed", highlight=False)
    for failure in summary.failures[:MAX_LISTED_FAILURES]:
        console.print(f"  failed: {failure}", style="red", markup=False, highlight=False)
    if summary.failed > MAX_LISTED_FAILURES:
        console.print(f"  ... and {summary.failed - MAX_LISTED_FAILURES} more (each was printed when it failed)",
                      style="red", highlight=False)


def build(args: argparse.Namespace, script: str, settings: dict, columns: Sequence[str], jobs: list[Job],
          process: Callable[[Job], Result], console: Console) -> Summary:
    """The whole run of a script whose jobs name their outputs up front (ffhq, celeba_test):
    settings check, done/to-do split, dry-run report or pooled run, summary."""
    check_settings(args.out, script, settings, write=not args.dry_run)
    manifest = Manifest.load(args.out / MANIFEST_NAME, columns)
    existing = existing_files(args.out)
    to_do = [job for job in jobs if not is_done(job, manifest, existing)]
    summary = Summary(total=len(jobs), done_before=len(jobs) - len(to_do), to_do=len(to_do))
    report_plan(console, script, summary, args.dry_run)
    if args.dry_run:
        return summary
    remove_stale_temporaries(args.out, existing)
    with manifest:
        run_jobs(to_do, process, manifest, args.workers, script, summary, console)
    report_summary(console, script, summary)
    return summary


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cli(main: Callable[[list[str] | None], Summary]) -> None:
    """Run ``main`` as a command: exit 0, 1 when some inputs failed, 2 on a ``DataPrepError``;
    SIGTERM (a batch scheduler's stop) ends it like Ctrl-C, closing the pool and the manifest."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = main(None)
    except (DataPrepError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: finished files and their manifest rows are kept; run again to resume", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(1 if summary.failed else 0)
