"""The one autoencoder interface (Sim-VAE and diffusers AutoencoderKL directories), LatentSpace on a
non-8 factor, `latent-pmrf reconstruct` against an independent NumPy/diffusers reference, and a flow
trained on a diffusers VAE that its checkpoint rebuilds without the VAE's files."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, TINY_SWINIR_CFG, randomize
from latent_pmrf.cli.main import main
from latent_pmrf.flow import LatentSpace
from latent_pmrf.models.autoencoder import Autoencoder, load_autoencoder
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
from test_restoration_training import TINY_HDIT, TINY_SWINIR, data_overrides

diffusers = pytest.importorskip("diffusers", reason="diffusers is the 'baselines' extra")


def save_tiny_diffusers_vae(directory):
    """Two levels: downsampling factor 2, 4 latent channels, FLUX-style shift and scale."""
    model = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
    )
    model.register_to_config(scaling_factor=0.5, shift_factor=0.1)
    randomize(model).save_pretrained(directory)
    return directory


def save_tiny_sim_vae(directory):
    """Four levels: factor 8, like every VAE of the paper."""
    cfg = SimVAEConfig(block_out_channels=[8, 8, 8, 8], layers_per_block=1, layers_mid_block=1, latent_channels=4,
                       scaling_factor=2.0, shift_factor=0.1)
    randomize(SimVAE(cfg)).save_pretrained(directory)
    return directory


@pytest.fixture
def vae_dirs(tmp_path):
    return {"diffusers": save_tiny_diffusers_vae(tmp_path / "diffusers_vae"),
            "sim": save_tiny_sim_vae(tmp_path / "sim_vae")}


def test_load_autoencoder_resolves_both_kinds_of_directory(vae_dirs):
    sim, kl = load_autoencoder(vae_dirs["sim"]), load_autoencoder(vae_dirs["diffusers"])
    assert isinstance(sim, Autoencoder) and isinstance(kl, Autoencoder)
    assert type(sim).__name__ == "SimVAE" and type(kl).__name__ == "DiffusersVAE"
    assert (sim.downsample_factor, sim.latent_channels, sim.scaling_factor, sim.shift_factor) == (8, 4, 2.0, 0.1)
    assert (kl.downsample_factor, kl.latent_channels, kl.scaling_factor, kl.shift_factor) == (2, 4, 0.5, 0.1)
    peer = diffusers.AutoencoderKL.from_pretrained(vae_dirs["diffusers"])
    torch.testing.assert_close(kl.model.encoder.conv_in.weight, peer.encoder.conv_in.weight)


def _write(directory, name, text):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


@pytest.mark.parametrize("make,match", [
    (lambda d: _write(d, "notes.txt", "x"), "has no config.json"),
    (lambda d: _write(d, "config.json", json.dumps({"_class_name": "UNet2DConditionModel"})), "UNet2DConditionModel"),
    (lambda d: _write(d, "config.json", "{broken"), "not valid JSON"),
    (lambda d: _write(d / "vae", "config.json", "{}").parent, "try .*vae"),
    (lambda d: d / "missing", "not found"),
])
def test_load_autoencoder_rejects_a_bad_directory_naming_it(tmp_path, make, match):
    path = make(tmp_path / "bad")
    with pytest.raises((FileNotFoundError, ValueError), match=match) as err:
        load_autoencoder(path)
    assert str(path) in str(err.value)


def test_latent_space_takes_the_factor_from_the_vae(vae_dirs):
    space = LatentSpace(load_autoencoder(vae_dirs["diffusers"]), sample_posterior=False)
    assert space.scale_factor == 2
    x = torch.rand(2, 3, 12, 10) * 2 - 1
    z = space.encode(x)
    assert z.shape == (2, 4, 6, 5)
    peer = diffusers.AutoencoderKL.from_pretrained(vae_dirs["diffusers"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(z, (peer.encode(x).latent_dist.mode() - 0.1) * 0.5)
        torch.testing.assert_close(space.decode(z), peer.decode(z / 0.5 + 0.1).sample)
    assert space.decode(z).shape == x.shape
    assert LatentSpace(load_autoencoder(vae_dirs["sim"])).scale_factor == 8


def reference_model(kind, vae_dir):
    """Decode of the posterior mean, straight from diffusers / SimVAE (no wrapper, no padding)."""
    if kind == "diffusers":
        peer = diffusers.AutoencoderKL.from_pretrained(vae_dir).eval()
        return lambda x: peer.decode(peer.encode(x).latent_dist.mean).sample
    vae = SimVAE.from_pretrained(vae_dir).eval()
    return lambda x: vae.decode(vae.encode(x).mean)


def reference_reconstruction(model, image_file, factor, quantize):
    """PIL read -> NumPy pad (reflect at the bottom/right, edge where the image is too small) ->
    model -> crop -> 8 bits: floor as torchvision's to_pil_image (official test_vae.py), or round."""
    image = np.asarray(Image.open(image_file).convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    h, w = image.shape[:2]
    pad = ((0, -h % factor), (0, -w % factor), (0, 0))
    mode = "reflect" if pad[0][1] < h and pad[1][1] < w else "edge"
    x = torch.from_numpy(np.pad(image, pad, mode=mode)).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        out = model(x)[0, :, :h, :w].permute(1, 2, 0).numpy()
    levels = np.clip((out + 1) * 127.5, 0, 255)
    return (np.floor(levels) if quantize == "floor" else np.round(levels)).astype(np.uint8), out


@pytest.mark.parametrize("kind,factor,quantize", [("diffusers", 2, "floor"), ("sim", 8, "floor"), ("sim", 8, "round")])
def test_reconstruct_keeps_names_and_odd_sizes_and_equals_the_reference(tmp_path, vae_dirs, kind, factor, quantize):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    sizes = {"a.png": (37, 53), "sub/b.jpg": (53, 37), "sub/tiny.png": (6, 3)}  # (W, H) as PIL; tiny: edge pad
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inputs / name)
    (inputs / "broken.png").write_bytes(b"not a png")  # reported and skipped
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:  # the others are written; the exit code says one failed
        main(["reconstruct", "--vae", str(vae_dirs[kind]), "--input", str(inputs), "--output", str(out),
              "--batch-size", "2", "--device", "cpu", "--quantize", quantize])
    assert exit_.value.code == 3
    written = {p.relative_to(out).as_posix(): Image.open(p).size for p in out.rglob("*") if p.is_file()}
    assert written == {"a.png": (37, 53), "sub/b.png": (53, 37), "sub/tiny.png": (6, 3)}
    model = reference_model(kind, vae_dirs[kind])
    for name in sizes:
        ours = np.asarray(Image.open(out / name.replace(".jpg", ".png")))
        expected, raw = reference_reconstruction(model, inputs / name, factor, quantize)
        assert ours.dtype == np.uint8 and ours.shape == expected.shape
        # floor and round differ on about half the values; float noise flips a rare one by a level
        assert np.abs(ours.astype(int) - expected).max() <= 1 and (ours == expected).mean() > 0.99
        assert (np.abs(raw) < 0.99).mean() > 0.2  # the comparison is not between two clamped images


def test_reconstruct_refuses_to_overwrite_its_inputs(tmp_path, vae_dirs):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(SystemExit):  # the CLI turns the ValueError into exit code 2
        main(["reconstruct", "--vae", str(vae_dirs["sim"]), "--input", str(tmp_path), "--output", str(tmp_path),
              "--device", "cpu"])
    assert np.asarray(Image.open(tmp_path / "x.png")).max() == 0


def test_flow_on_a_diffusers_vae_trains_and_rebuilds_without_its_files(faces_dir, tmp_path):
    from latent_pmrf.analysis.run_logs import last_checkpoint
    from latent_pmrf.flow import RestorationPipeline
    from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

    vae_dir = save_tiny_diffusers_vae(tmp_path / "kl_vae")
    pm_file = tmp_path / "pm.pth"  # a tiny f(y) in DifFace's released layout
    pm_state = SwinIR(SwinIRConfig(**TINY_SWINIR_CFG)).state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in pm_state.items()}}, pm_file)
    out = tmp_path / "run"
    main(["train", str(REPO / "configs/latent_pmrf/ffhq512_flux.yaml"), f"vae={vae_dir}",
          f"posterior_mean.checkpoint={pm_file}", *(f"posterior_mean.model.{o}" for o in TINY_SWINIR),
          "model.preset=hdit_latent_pmrf", TINY_HDIT, "model.mapping_width=32", "model.in_channels=4", "model.out_channels=4", "val_euler_steps=2",
          "convergence.every_n_steps=0",  # its end-of-run pass restores whole 512² images: a minute on CPU at f2
          *data_overrides(faces_dir, out, 2)])
    ckpt_path = last_checkpoint(out)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["pipeline"]["vae"]["_class_name"] == "AutoencoderKL"

    saved = diffusers.AutoencoderKL.from_pretrained(vae_dir).state_dict()
    shutil.rmtree(vae_dir)  # the checkpoint alone must do
    module = RestorationPipeline.from_checkpoint(ckpt_path)
    vae = module.space.vae
    assert type(vae).__name__ == "DiffusersVAE" and module.space.scale_factor == 2
    assert (vae.scaling_factor, vae.shift_factor) == (0.5, 0.1)
    for key, value in saved.items():
        torch.testing.assert_close(vae.model.state_dict()[key], value, rtol=0, atol=0)
    lq = torch.rand(1, 3, 32, 32) * 2 - 1
    restored, pm = module.restore(lq, steps=2, generator=torch.Generator().manual_seed(0))
    assert restored.shape == pm.shape == lq.shape
