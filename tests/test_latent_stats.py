"""`vae-latent-stats` on any autoencoder (flow/latent_stats.py): a diffusers VAE's factors against
NumPy over the diffusers model's own posterior means, and `--write` refused, with a clear message
and nothing written, for a VAE that is not a local Sim-VAE snapshot."""

import numpy as np
import pytest
import torch

from latent_pmrf.cli.main import main
from latent_pmrf.data.image_folder import ImageFolderCenter
from latent_pmrf.flow.latent_stats import estimate_latent_stats

diffusers = pytest.importorskip("diffusers", reason="diffusers is the 'baselines' extra")
from test_reconstruct import save_tiny_diffusers_vae  # noqa: E402


def test_diffusers_vae_stats_against_numpy(faces_dir, tmp_path):
    vae_dir = save_tiny_diffusers_vae(tmp_path / "kl_vae")
    stats = estimate_latent_stats(vae_dir, faces_dir / "hq", limit=3, crop_size=64, batch_size=2)
    peer = diffusers.AutoencoderKL.from_pretrained(vae_dir).eval()
    with torch.no_grad():
        z = np.concatenate([peer.encode(item["image"][None]).latent_dist.mean.numpy().ravel()
                            for item in ImageFolderCenter(faces_dir / "hq", 64, 3)]).astype(np.float64)
    assert stats["num_images"] == 3 and stats["crop_size"] == 64
    assert stats["shift_factor"] == pytest.approx(z.mean(), rel=1e-4, abs=1e-6)
    assert stats["scaling_factor"] == pytest.approx(1 / z.std(), rel=1e-4)


@pytest.mark.parametrize("kind", ["diffusers_dir", "repo_id", "short_name"])
def test_write_refuses_what_is_not_a_local_sim_vae(kind, faces_dir, tmp_path, capsys):
    vae = {"diffusers_dir": lambda: str(save_tiny_diffusers_vae(tmp_path / "kl_vae")),
           "repo_id": lambda: "someone/some-vae", "short_name": lambda: "sdxl"}[kind]()
    before = (tmp_path / "kl_vae" / "config.json").read_text() if kind == "diffusers_dir" else None
    with pytest.raises(SystemExit) as exc:
        main(["vae-latent-stats", "--vae", vae, "--images", str(faces_dir / "hq"), "--limit", "1",
              "--crop-size", "64", "--device", "cpu", "--write"])
    message = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert exc.value.code == 2 and "--write" in message and "Sim-VAE snapshot" in message and vae in message
    if before is not None:
        assert "AutoencoderKL" in message and (tmp_path / "kl_vae" / "config.json").read_text() == before
