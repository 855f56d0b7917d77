"""Training-time validation measures what `latent-pmrf evaluate` measures: the ``val/psnr`` and
``val/ssim`` a validation loop logs equal evaluate's numbers on the same images written as PNGs
(by ``latent-pmrf restore``'s writer), whatever the batch size; under DDP each rank validates a
contiguous shard (the 2-process runs of tests/faults/test_ddp.py compare with one process)."""

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from latent_pmrf.cli.restore import save_png
from latent_pmrf.lightning.val_images import log_psnr_ssim, validation_shard
from latent_pmrf.metrics.evaluate import evaluate_folders


class LogsPSNR(L.LightningModule):
    def validation_step(self, batch, batch_idx):
        log_psnr_ssim(self, batch["pred"], batch["gt"])


def images_off_the_grid(faces_dir, n=5, size=48):
    """GT faces in [-1, 1] and "restorations": noisy, off the 8-bit grid, partly beyond [-1, 1]."""
    files = sorted((faces_dir / "hq").glob("*.png"))[:n]
    gt = torch.stack([torch.from_numpy(cv2.resize(cv2.imread(str(f))[..., ::-1], (size, size),
                                                  interpolation=cv2.INTER_AREA).copy()) for f in files])
    gt = gt.permute(0, 3, 1, 2).float() / 127.5 - 1
    pred = gt + 0.08 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))
    return [{"pred": p, "gt": g} for p, g in zip(pred, gt)]


@pytest.mark.parametrize("batch_size", [2, 5])
def test_logged_psnr_ssim_equal_evaluate_on_the_written_pngs(faces_dir, tmp_path, batch_size):
    samples = images_off_the_grid(faces_dir)
    assert any(s["pred"].abs().max() > 1 for s in samples)  # the clamp matters
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    logged = trainer.validate(LogsPSNR(), DataLoader(samples, batch_size=batch_size), verbose=False)[0]
    for i, sample in enumerate(samples):
        for column in ("pred", "gt"):
            save_png(sample[column], tmp_path / column / f"{i:03d}.png")
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", metrics=["psnr", "ssim"], progress=False)
    assert logged["val/psnr"] == pytest.approx(result.summary["psnr"], rel=1e-6)
    assert logged["val/ssim"] == pytest.approx(result.summary["ssim"], rel=1e-6)
    # and not what a [0, 1] float PSNR off the grid (the old torchmetrics convention) gives
    p, g = ((torch.stack([s[c] for s in samples]).clamp(-1, 1) + 1) / 2 for c in ("pred", "gt"))
    float_psnr = float(np.mean([10 * np.log10(1 / ((a - b) ** 2).mean().item()) for a, b in zip(p, g)]))
    assert abs(float_psnr - result.summary["psnr"]) > 1e-3


@pytest.mark.parametrize("n, world_size", [(5, 2), (8, 2), (7, 3), (3, 3)])
def test_validation_shards_are_contiguous_balanced_and_cover_the_set_once(n, world_size):
    shards = [list(validation_shard(list(range(n)), rank, world_size)) for rank in range(world_size)]
    assert [i for shard in shards for i in shard] == list(range(n))  # rank order is set order
    assert max(map(len, shards)) - min(map(len, shards)) <= 1 and min(map(len, shards)) >= 1


def test_a_validation_set_smaller_than_the_ranks_is_refused():
    with pytest.raises(ValueError, match="3 images, fewer than the 4 ranks.*val_limit"):
        validation_shard(list(range(3)), 0, 4)
