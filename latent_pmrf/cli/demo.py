"""``latent-pmrf demo``: restore a photo in the browser (Gradio) with a trained checkpoint.

The page takes one photo and ``restore``'s options (faces aligned or detected, Euler steps, seed,
the task of a multi-task model, early branching) and shows the input, the posterior mean f(y) and
the restoration side by side, with the restored PNG to download. It restores what
``latent-pmrf restore`` writes for that file with the same options: the same reading
(``read_image``), padding and batch call (``restore_batch``), generators ((seed, 0) for the image,
(seed, 0, j) for face j, as file 0 of a run) and 8-bit conversion; tests/test_demo.py compares the
two. gradio is imported by ``import_gradio`` only, so ``restore`` and ``--help`` run without it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.image_io import ImageReadError, is_gray, read_image
from ..faces.paste import paste_face, upscale_background
from ..flow.pipeline import RestorationPipeline, load_restoration
from ..seeding import torch_generator
from .restore import DEFAULT_MAX_PIXELS, early_branching_scorer, png_levels, restore_batch
from .restore_faces import FaceOptions, aligned_faces, to_image

TITLE = "Latent-PMRF face restoration"
FACE_MODES = ("aligned", "detect")
OUTPUT_BUTTONS = ["download", "fullscreen"]  # not gradio's "share" (to Hugging Face): the page sends nothing out


@dataclass
class DemoResult:
    restored: np.ndarray  # 8-bit, (H, W, 3), or (H, W) for a gray input in aligned mode (as restore writes it)
    posterior_mean: np.ndarray  # f(y), same layout; in detect mode the photo with the f(y) faces pasted back
    note: str  # what was done, for the page


def _levels(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> 8-bit levels, through the tensor path ``restore_faces`` writes with."""
    return png_levels(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) * 2 - 1)


class DemoRestorer:
    """A loaded pipeline and what the page may ask of it. The face detector and the early-branching
    scorers are built on first use and kept (the depth scorer loads a network)."""

    def __init__(self, pipeline: RestorationPipeline, device: str = "cpu", detector: str = "mtcnn"):
        self.pipeline = pipeline.to(device).eval()
        self.device = device
        self.face_options = FaceOptions(detector=detector)
        self._detector = None
        self._scorers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}

    def _build_scorer(self, name: str, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if name not in self._scorers:
            from ..flow.scorers import build_scorer

            self._scorers[name] = build_scorer(name, device)
        return self._scorers[name]

    def restore(self, image: np.ndarray, faces: str = "aligned", steps: int = 25, seed: int = 0,
                task: str | None = None, branches: int = 1, branch_steps: int = 1,
                scorer: str | None = None) -> DemoResult:
        """An (H, W, 3) image in [0, 1] (``read_image``'s layout) restored as ``restore`` restores
        file 0 of a folder; ``faces="detect"`` restores every face found and pastes it back."""
        if faces not in FACE_MODES:
            raise ValueError(f"faces must be one of {FACE_MODES}, got {faces!r}")
        score = early_branching_scorer(branches, branch_steps, steps, scorer, self.device, self._build_scorer)
        self.pipeline.task_id(task)  # an unknown task fails here, naming the model's tasks
        options = {"device": self.device, "task": task, "score": score, "branches": branches,
                   "branch_steps": branch_steps}
        if faces == "aligned":
            restored, posterior_mean, chosen = restore_batch(
                self.pipeline, [image], [torch_generator(seed, 0, device=self.device)], steps, **options)
            gray = is_gray(image)  # restore's default --keep-gray
            note = "" if chosen[0] is None else f"early branching chose draw {chosen[0]} of {branches}"
            return DemoResult(png_levels(restored[0], gray), png_levels(posterior_mean[0], gray), note)
        if self._detector is None:
            self._detector = self.face_options.build_detector(self.device)
        crops, matrices = aligned_faces(image, self._detector, self.face_options)
        canvas, mean_canvas = upscale_background(image, 1), upscale_background(image, 1)
        for j, (crop, matrix) in enumerate(zip(crops, matrices)):
            restored, posterior_mean, _ = restore_batch(
                self.pipeline, [crop], [torch_generator(seed, 0, j, device=self.device)], steps, **options)
            paste_face(canvas, to_image(restored[0]), matrix)
            paste_face(mean_canvas, to_image(posterior_mean[0]), matrix)
        note = f"{len(crops)} face(s) restored" if crops else "no face found: the photo is shown as it was"
        return DemoResult(_levels(canvas), _levels(mean_canvas), note)


def restore_upload(restorer: DemoRestorer, path: str | Path, folder: Path, **options) -> tuple[DemoResult, Path]:
    """What the page's button does: read the uploaded file as ``restore`` reads files (gray, RGBA,
    16-bit, EXIF orientation; above ``DEFAULT_MAX_PIXELS`` refused), restore it with ``options``
    (``DemoRestorer.restore``'s) and write the restoration to a new FOLDER/<tmp>/<name>_restored.png."""
    image = read_image(path, DEFAULT_MAX_PIXELS)
    start = time.perf_counter()
    result = restorer.restore(image, **options)
    seconds = time.perf_counter() - start
    height, width = image.shape[:2]
    result.note = "; ".join(filter(None, [f"{width}x{height} restored in {seconds:.1f} s", result.note]))
    folder.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(dir=folder)) / f"{Path(path).stem}_restored.png"  # two a.png keep both
    Image.fromarray(result.restored).save(target, format="PNG")
    return result, target


def import_gradio():
    """gradio, imported here and nowhere else; its telemetry off (the demo sends nothing anywhere)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as err:
        raise ImportError(
            "`latent-pmrf demo` needs gradio, which is not installed: `make venv` installs it (the demo extra, "
            "and gradio itself from setup.cfg's [no-deps]: its metadata caps pillow below our pin); with pip, "
            "from the repository root: pip install -e '.[demo]' && pip install --no-deps \"$(grep '^gradio==' "
            "setup.cfg)\"") from err
    return gradio


def build_app(restorer: DemoRestorer, steps: int = 25, subtitle: str = ""):
    """The page (a ``gradio.Blocks``): photo | f(y) | restoration, the options, a Restore button
    and the restored PNG's download."""
    gr = import_gradio()
    from ..flow.scorers import SCORERS

    tasks = restorer.pipeline.tasks
    outputs = tempfile.TemporaryDirectory(prefix="latent-pmrf-demo-")  # removed with the app

    def run(path, faces, euler_steps, seed, task, branches, branch_steps, scorer):
        if path is None:
            raise gr.Error("Upload a photo first.")
        try:
            result, png = restore_upload(
                restorer, path, Path(outputs.name), faces=faces, steps=int(euler_steps), seed=int(seed),
                task=task if len(tasks) > 1 else None, branches=int(branches), branch_steps=int(branch_steps),
                scorer=scorer if int(branches) > 1 else None)
        except (ValueError, FileNotFoundError, ImageReadError) as err:  # bad options, missing weights, bad file
            raise gr.Error(str(err)) from err
        return result.posterior_mean, result.restored, gr.DownloadButton(value=str(png), interactive=True), result.note

    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}\n{subtitle}")
        with gr.Row():
            source = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], label="input",
                              elem_id="input")  # the file as uploaded: restore_upload reads it as restore does
            posterior_mean = gr.Image(label="posterior mean f(y)", format="png", interactive=False,
                                      buttons=OUTPUT_BUTTONS, elem_id="posterior-mean")
            restored = gr.Image(label="restoration", format="png", interactive=False, buttons=OUTPUT_BUTTONS,
                                elem_id="restored")
        with gr.Row():
            faces = gr.Radio(list(FACE_MODES), value="aligned", label="faces",
                             info="aligned: the photo is one aligned face; detect: every face found is aligned, "
                                  "restored and pasted back")
            steps_in = gr.Slider(1, 100, value=steps, step=1, label="Euler steps")
            seed = gr.Number(0, precision=0, minimum=0, label="seed")
            task = gr.Dropdown(tasks, value=tasks[0], label="task", visible=len(tasks) > 1)
        with gr.Accordion("early branching (GenSIRR's DEBS)", open=False), gr.Row():
            branches = gr.Slider(1, 16, value=1, step=1, label="branches k", info="1: plain sampling")
            branch_steps = gr.Slider(1, 100, value=1, step=1, label="branch steps m")
            scorer = gr.Dropdown(list(SCORERS), value="depth", label="scorer",
                                 info="rates the k draws' one-step end points; higher is kept")
        with gr.Row():
            button = gr.Button("Restore", variant="primary", elem_id="restore")
            download = gr.DownloadButton("Download restored PNG", interactive=False, elem_id="download")
        note = gr.Markdown(elem_id="note")
        button.click(run, [source, faces, steps_in, seed, task, branches, branch_steps, scorer],
                     [posterior_mean, restored, download, note])
    app.restored_pngs = outputs  # the downloads' folder lives as long as the page
    return app


def launch_demo(ckpt: str | Path, device: str = "cpu", host: str = "127.0.0.1", port: int = 7860,
                steps: int = 25, detector: str = "mtcnn") -> None:
    """Serve the page until interrupted; gradio is checked before the checkpoint is read."""
    import_gradio()
    restorer = DemoRestorer(load_restoration(ckpt), device, detector)
    subtitle = f"checkpoint `{ckpt}` on {device}; tasks: {', '.join(restorer.pipeline.tasks)}"
    app = build_app(restorer, steps, subtitle)
    app.queue(default_concurrency_limit=1)  # one restoration at a time: one model on one device
    app.launch(server_name=host, server_port=port, share=False, show_error=True)
