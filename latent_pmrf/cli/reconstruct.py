"""``latent-pmrf reconstruct``: a VAE's reconstructions D(mode of q(z|x)) of an image folder, the
reconstruction columns of Tables 1-3 (then ``latent-pmrf evaluate --pred OUTPUT --gt INPUT``).

As the official ``test_vae.py``: the posterior mode is decoded (its ``forward`` with
``sample_posterior=False``), in float32. That script feeds images unchanged (CelebA-Test is 512², a
multiple of 8); any other size is padded here at the bottom/right to the VAE's multiple (reflect,
replicate where the image is too small: ``pad_to_multiple``, the rule ``restore`` uses) and the
reconstruction is cropped back, so sizes that are multiples are reconstructed exactly as there.

8-bit output: that script saves with torchvision's ``to_pil_image``, which truncates
(floor(255·y)); ``quantize="floor"`` (the default) does the same, ``"round"`` rounds as ``restore``
and the official restoration pipeline do. Truncation costs 1/4 LSB² of MSE more than rounding: about
+0.3 dB PSNR for rounding at Sim-VAE c32's 42.7 dB, +0.6 dB at c48's 45.1 dB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from ..models.autoencoder import load_autoencoder
from ..models.swinir import pad_to_multiple
from .restore import (DEFAULT_MAX_PIXELS, RestoreSummary, input_files, plan_outputs, report_failures,
                      run_in_size_batches, save_png)

QUANTIZE = ("floor", "round")


@torch.no_grad()
def reconstruct(vae: str | Path, source: str | Path, output: str | Path, batch_size: int = 1, device: str = "cpu",
                quantize: str = "floor", console: Console | None = None, overwrite: bool = False,
                skip_existing: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> RestoreSummary:
    """Writes OUTPUT/<relative path>.png (8-bit RGB, the input's size) for every image under
    ``source`` (a folder, searched recursively, or one file). ``vae``: anything ``load_autoencoder``
    takes. An unreadable file, or one above ``max_pixels`` (read from its header, not decoded), is
    reported and skipped; the rest still run (the CLI then exits with ``EXIT_PARTIAL``).

    Before the VAE is loaded, as ``restore``: the output folder must be writable, two inputs may not
    share an output name, and existing outputs are refused unless ``overwrite`` (or kept with
    ``skip_existing``)."""
    console = console or Console(stderr=True)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if quantize not in QUANTIZE:
        raise ValueError(f"--quantize must be one of {QUANTIZE}, got {quantize!r}")
    root, files = input_files(Path(source))
    output = Path(output)
    targets = [output / path.relative_to(root).with_suffix(".png") for path in files]
    todo = plan_outputs(files, targets, output, overwrite, skip_existing)
    model = load_autoencoder(vae).to(device).eval()
    multiple = model.downsample_factor
    summary = RestoreSummary(existing=[targets[i] for i in sorted(set(range(len(files))) - set(todo))])

    def run(batch: list[tuple[Path, np.ndarray]]) -> None:
        # (H, W, 3) in [0, 1] -> (1, 3, H, W) in [-1, 1] -> padded to multiples of f, stacked
        x = torch.cat([pad_to_multiple(torch.from_numpy(im).permute(2, 0, 1)[None] * 2 - 1, multiple)
                       for _, im in batch]).to(device)
        recon = model.decode(model.encode(x).mode()).float().clamp(-1, 1)
        if quantize == "floor":  # snap to the truncated levels k/255; save_png's rounding then keeps them
            recon = torch.floor((recon + 1) * 127.5) / 127.5 - 1
        for (target, im), out in zip(batch, recon):
            save_png(out[:, : im.shape[0], : im.shape[1]], target)
            summary.written.append(target)

    run_in_size_batches([(targets[i], files[i]) for i in todo], multiple, batch_size, run, summary, console,
                        f"reconstructing with {vae}", max_pixels=max_pixels)
    if summary.existing:
        console.print(f"kept {len(summary.existing)} existing output(s) (--skip-existing)")
    console.print(f"reconstructed {len(summary.written)} image(s) with {vae} (f{multiple}c{model.latent_channels}, "
                  f"posterior mode) into {output}")
    report_failures(summary, console)
    return summary
