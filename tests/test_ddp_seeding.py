"""Per-rank seeding under real DDP (issue 11, bug 2): two CPU processes (gloo) train a tiny latent
flow; each rank must draw its own source noise ε, VAE posterior samples and flow times t, while the
data shards stay disjoint and the weights start identical.

The training runs in a subprocess through the real CLI (`latent-pmrf train ... trainer.strategy=ddp
trainer.devices=2`); Lightning's launcher re-runs that script for rank 1. The script records, from
inside each rank's training step, what the step drew.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SWINIR_CFG, save_tiny_frozen_nets

from latent_pmrf.seeding import derive_seed

ROOT = Path(__file__).resolve().parents[1]

RECORDING_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import latent_pmrf.flow.pipeline as pipeline
    import latent_pmrf.lightning.flow_module as flow_module
    from latent_pmrf.cli.main import main

    out_dir, records = sys.argv[1], []
    draws = {}
    _uniform, _source = flow_module.stratified_uniform, pipeline.source_sample

    def stratified_uniform(*args, **kwargs):
        draws["t"] = _uniform(*args, **kwargs)
        return draws["t"]

    def source_sample(*args, **kwargs):
        draws["x0"] = _source(*args, **kwargs)
        return draws["x0"]

    flow_module.stratified_uniform, pipeline.source_sample = stratified_uniform, source_sample
    _step = flow_module.FlowModule.training_step

    def training_step(self, batch, batch_idx):
        rng_state = torch.random.get_rng_state()
        if self.global_step == 0:
            torch.save({k: v.detach().clone() for k, v in self.pipeline.velocity.state_dict().items()},
                       f"{out_dir}/init_rank{self.global_rank}.pt")
        loss = _step(self, batch, batch_idx)
        # what this step drew from torch's global generator: ε and posterior samples come from it
        torch.random.set_rng_state(rng_state)
        probe = torch.randn(64).tolist()
        records.append({"rank": self.global_rank, "step": self.global_step, "index": batch["index"].tolist(),
                        "t": draws["t"].tolist(), "randn": probe})
        with open(f"{out_dir}/rank{self.global_rank}.json", "w") as f:
            json.dump(records, f)
        return loss

    flow_module.FlowModule.training_step = training_step
    main(["train", *sys.argv[2:]])
''')


def _photos(folder: Path, n: int = 8, size: int = 64) -> Path:
    """n crops of scikit-image's bundled photos (no external data needed)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    for i in range(n):
        photo = photos[i % len(photos)]
        y, x = (i // len(photos)) * 90, (i // len(photos)) * 70
        Image.fromarray(photo[y : y + 2 * size, x : x + 2 * size]).resize((size, size)).save(folder / f"{i}.png")
    return folder


def test_derive_seed_separates_ranks_and_seeds():
    seeds = {derive_seed(s, r) for s in range(4) for r in range(8)}
    assert len(seeds) == 32
    assert derive_seed(3, 1) == derive_seed(3, 1) == int(np.random.SeedSequence([3, 1]).generate_state(1)[0])
    with pytest.raises(ValueError):
        derive_seed(-1)


@pytest.mark.slow
def test_ddp_ranks_draw_independent_noise_and_disjoint_data(tmp_path):
    save_tiny_frozen_nets(tmp_path)
    images = _photos(tmp_path / "hq")
    script = tmp_path / "record.py"
    script.write_text(RECORDING_SCRIPT)
    records = tmp_path / "records"
    records.mkdir()
    overrides = [
        f"vae={tmp_path / 'vae'}", f"posterior_mean.checkpoint={tmp_path / 'pm.pth'}",
        *(f"posterior_mean.model.{k}={v}" for k, v in TINY_SWINIR_CFG.items()),
        "model.preset=hdit_latent_pmrf",
        "model.levels=[{depth: 1, width: 32, d_head: 16, kernel_size: 3, attention: neighborhood},"
        "{depth: 1, width: 64, d_head: 16, attention: global}]",
        "model.mapping_width=32", "model.in_channels=4", "model.out_channels=4",
        f"data.train=[{{root: {images}}}]", "data.val_dir=null", "data.crop_size=64", "data.batch_size=2",
        "data.num_workers=0", "convergence.every_n_steps=0", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.strategy=ddp", "trainer.precision=32-true", f"trainer.output_dir={tmp_path / 'run'}",
        "trainer.max_steps=3", "trainer.val_every_n_steps=1000", "trainer.checkpoint_every_n_steps=1000",
        "trainer.log_every_n_steps=1", "trainer.progress_bar=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(records),
                           str(ROOT / "configs/latent_pmrf/ffhq512_c32.yaml"), *overrides],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0, rank1 = (json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1))
    assert [r["step"] for r in rank0] == [r["step"] for r in rank1] == [0, 1, 2]
    for a, b in zip(rank0, rank1):
        # 8 images, batch 2 on each of 2 ranks: two steps per epoch; the shards of a step are disjoint.
        assert not set(a["index"]) & set(b["index"])
        assert not np.allclose(a["randn"], b["randn"])  # the generator ε and posterior samples come from
        # PMRF's strata: rank r takes bins r, r + R, ... of [0, 1) split into B·R = 4 bins; the
        # position inside a bin is the random part, and it must differ between ranks.
        assert sorted(int(t * 4) for t in a["t"] + b["t"]) == [0, 1, 2, 3]
        assert not np.allclose(np.modf(np.array(a["t"]) * 4)[0], np.modf(np.array(b["t"]) * 4)[0])
    init0, init1 = (torch.load(records / f"init_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(init0[k], init1[k]) for k in init0)
