"""Reflection-equivariant VAE (GenSIRR Stage I): the loss against independent formulas, LoRA
adapters and their merge, and a tiny fine-tuning run through the task table."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from conftest import REPO, randomize, tiny_vae_overrides
from latent_pmrf.analysis.run_logs import last_checkpoint, read_logged_metrics
from latent_pmrf.cli.main import main
from latent_pmrf.cli.vae_equivariance import measure_equivariance
from latent_pmrf.config import ConfigError
from latent_pmrf.lightning.re_vae_module import pairing
from latent_pmrf.lightning.tasks import load_task_config, train
from latent_pmrf.losses.equivariance import ReVAELoss, ReVAELossConfig, superposition_metrics
from latent_pmrf.models.gaussian import DiagonalGaussian
from latent_pmrf.models.lora import LoRAConfig, add_lora, lora_parameters, merge_lora
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig

TINY = SimVAEConfig(**tiny_vae_overrides())


def no_posterior_noise(vae: SimVAE) -> SimVAE:
    """log-variance pinned at the clamp (-30): a posterior sample equals the mean to ~3e-7."""
    c = vae.config.latent_channels
    with torch.no_grad():
        vae.encoder.conv_out.weight[c:] = 0
        vae.encoder.conv_out.bias[c:] = -40
    return vae


class LinearVAE(nn.Module):
    """An exactly linear encoder (stride-2 conv, no bias, log-variance at the clamp) and decoder."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.channels = channels
        self.encoder = nn.Conv2d(3, channels, 2, stride=2, bias=False)
        self.decoder = nn.ConvTranspose2d(channels, 3, 2, stride=2, bias=False)

    def encode(self, x):
        mean = self.encoder(x)
        return DiagonalGaussian(mean, torch.full_like(mean, -40.0).clamp(-30, 20))

    def decode(self, z):
        return self.decoder(z)


def images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def loss(form: str) -> ReVAELoss:
    return ReVAELoss(ReVAELossConfig(lpips_weight=0.0, equivariance_form=form))


# ---------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("form", ["latent", "pixel"])
def test_equivariance_is_zero_for_a_linear_encoder_and_positive_for_sim_vae(form):
    x, index, alpha = images(6), torch.arange(3), torch.tensor([0.1, 0.5, 0.9])
    torch.manual_seed(0)
    linear, sim_vae = LinearVAE(), randomize(SimVAE(TINY))
    with torch.no_grad():
        assert float(loss(form)(linear, x, index, index + 3, alpha)["equivariance"]) < 1e-10
        assert float(loss(form)(sim_vae, x, index, index + 3, alpha)["equivariance"]) > 1e-4
    assert float(superposition_metrics(linear, x[:3], x[3:], alpha)["equivariance_error"].max()) < 1e-10
    assert float(superposition_metrics(sim_vae, x[:3], x[3:], alpha)["equivariance_error"].min()) > 1e-3


@pytest.mark.parametrize("form", ["latent", "pixel"])
def test_loss_terms_match_independent_formulas(form):
    """One image at a time through the VAE, the mixtures and targets in float64 NumPy."""
    vae = no_posterior_noise(randomize(SimVAE(TINY)))
    x = images(4)
    background_index, reflection_index = torch.tensor([0, 1, 2, 3]), torch.tensor([2, 0, 3, 1])
    alpha = torch.tensor([0.2, 0.7, 0.0, 1.0])
    with torch.no_grad():
        terms = loss(form)(vae, x, background_index, reflection_index, alpha)

    def mean_of(image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return vae.encode(torch.from_numpy(image[None]).float()).mean[0].double().numpy()

    def recon_of(image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return vae.decode(torch.from_numpy(mean_of(image)[None]).float())[0].double().numpy()

    f = mean_of if form == "latent" else recon_of
    xs, errors = x.double().numpy(), []
    for b, r, a in zip(background_index.tolist(), reflection_index.tolist(), alpha.tolist()):
        mixture = (1 - a) * xs[b] + a * xs[r]
        errors.append((f(mixture) - ((1 - a) * f(xs[b]) + a * f(xs[r]))) ** 2)
    assert float(terms["equivariance"]) == pytest.approx(np.mean(errors), rel=1e-4, abs=1e-10)
    mse = np.mean([(recon_of(image) - image) ** 2 for image in xs])
    assert float(terms["mse"]) == pytest.approx(mse, rel=1e-4)
    assert float(terms["total"]) == pytest.approx(mse + np.mean(errors), rel=1e-4)


def test_pairing_is_one_consistent_derangement():
    torch.manual_seed(0)
    batch = {"image": images(5)}
    for _ in range(20):
        distinct, background_index, reflection_index = pairing(batch)
        assert distinct is batch["image"] and background_index.tolist() == list(range(5))
        assert sorted(reflection_index.tolist()) == list(range(5))
        assert (reflection_index != background_index).all()  # no image mixed with itself
    two = {"background": images(3), "reflection": images(3, seed=1)}
    distinct, background_index, reflection_index = pairing(two)
    assert torch.equal(distinct[background_index], two["background"])
    assert torch.equal(distinct[reflection_index], two["reflection"])


# ---------------------------------------------------------------------------------------- LoRA
@pytest.mark.parametrize("preset, modules", [("sim_vae_c32", ["encoder"]), ("sd_vae", ["encoder", "quant_conv"])])
def test_lora_trains_only_adapters_and_merges_to_the_same_model(preset, modules, tmp_path):
    cfg = SimVAEConfig.preset(preset, **tiny_vae_overrides())
    vae = randomize(SimVAE(cfg))
    x = images(4)
    with torch.no_grad():
        base_out = vae.decode(vae.encode(x).mean)
    base_state = {k: v.clone() for k, v in vae.state_dict().items()}

    adapted = add_lora(vae, modules, LoRAConfig(rank=4, alpha=8.0))
    assert adapted and all(name.startswith(tuple(modules)) for name in adapted)
    assert any("to_q" in name for name in adapted) == (preset == "sd_vae")  # Linear layers of mid attention
    trainable = [name for name, p in vae.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A" in n or ".lora_B" in n for n in trainable)
    assert len(trainable) == 2 * len(adapted) == len(list(lora_parameters(vae)))
    with torch.no_grad():
        assert torch.equal(vae.decode(vae.encode(x).mean), base_out)  # B = 0: the base model

    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=1e-2)
    loss("latent")(vae, x, torch.arange(2), torch.arange(2, 4), torch.tensor([0.3, 0.6]))["total"].backward()
    optimizer.step()
    for name, value in vae.state_dict().items():
        if ".lora_" not in name:
            base_name = name.replace(".parametrizations.weight.original", ".weight")
            assert torch.equal(value, base_state[base_name]), name  # the base weights did not move
    with torch.no_grad():
        adapted_out = vae.decode(vae.encode(x).mean)
    assert not torch.allclose(adapted_out, base_out)

    merge_lora(vae)
    assert set(vae.state_dict()) == set(base_state)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(vae.encode(x).mean), adapted_out, atol=1e-5, rtol=0)
    vae.save_pretrained(tmp_path)
    assert set(load_file(str(tmp_path / "diffusion_pytorch_model.safetensors"))) == set(base_state)
    loaded = SimVAE.from_pretrained(tmp_path)  # strict keys and shapes
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(x).mean), adapted_out, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------- fine-tuning
SKIMAGE_LAYERS = {  # disjoint photos: training backgrounds / reflections, held-out backgrounds / reflections
    "background": ["chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"],
    "reflection": ["hubble_deep_field.jpg", "ihc.png", "retina.jpg", "color.png"],
    "val_background": ["astronaut.png", "moon.png"],
    "val_reflection": ["gravel.png", "brick.png", "camera.png"],
}


@pytest.fixture(scope="module")
def layer_photos(tmp_path_factory):
    """scikit-image's bundled photos, shrunk to 96 px on the long side (fast to read)."""
    from skimage import data

    root = tmp_path_factory.mktemp("layers")
    for folder, names in SKIMAGE_LAYERS.items():
        (root / folder).mkdir()
        for name in names:
            image = Image.open(Path(data.__file__).parent / name).convert("RGB")
            image.thumbnail((96, 96), Image.BICUBIC)
            image.save(root / folder / (name.split(".")[0] + ".png"))
    return root


def write_config(tmp_path, photos, vae_dir, steps: int, extra: str = ""):
    path = tmp_path / "re_vae.yaml"
    path.write_text(f"""
task: re_vae
vae: {vae_dir}
lora: {{rank: 8, alpha: 8.0}}
loss: {{lpips_pretrained: false}}
data:
  background: [{{root: {photos / 'background'}}}]
  reflection: [{{root: {photos / 'reflection'}}}]
  crop_size: 32
  repeat: 8
  batch_size: 4
  num_workers: 0
  val_background_dir: {photos / 'val_background'}
  val_reflection_dir: {photos / 'val_reflection'}
  val_limit: 4
  val_crop_size: 32
optim: {{lr: 2.0e-3}}
trainer: {{output_dir: {tmp_path / 'run'}, max_steps: {steps}, accelerator: cpu, devices: 1, val_every_n_steps: {steps},
          checkpoint_every_n_steps: {steps}, log_every_n_steps: 5, progress_bar: false}}
{extra}""")
    return path


def test_finetuning_lowers_the_equivariance_error_on_held_out_mixtures(layer_photos, tmp_path, capsys):
    torch.manual_seed(0)
    start = tmp_path / "vae_start"
    SimVAE(TINY).save_pretrained(start)
    task, cfg = load_task_config(write_config(tmp_path, layer_photos, start, steps=20))
    run = train(task, cfg)
    ckpt = torch.load(last_checkpoint(run), map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 20 and any(".lora_B" in k for k in ckpt["state_dict"])
    logged = [float(r["val/equivariance_error"]) for r in read_logged_metrics(run) if r.get("val/equivariance_error")]
    assert len(logged) == 1 and np.isfinite(logged[0]) and list((run / "samples").glob("val_*.png"))

    after = tmp_path / "vae_after"
    main(["export-vae", str(last_checkpoint(run)), str(after)])
    assert set(load_file(str(after / "diffusion_pytorch_model.safetensors"))) == set(SimVAE(TINY).state_dict())
    SimVAE.from_pretrained(after)

    held_out = {"background": layer_photos / "val_background", "reflection": layer_photos / "val_reflection",
                "n": 8, "crop_size": 32}
    before_row, after_row = measure_equivariance([start, after], **held_out)
    drop = before_row["equivariance_error"] / after_row["equivariance_error"]
    # Measured: 0.127 -> 0.0043 (30x; 13x-37x over other data/trainer seeds); the same run with
    # loss.equivariance_weight=0 (L_recon only) gives 2.6x at a similar PSNR (GenSIRR's Table 1 point).
    assert drop > 8, (f"relative equivariance error {before_row['equivariance_error']:.4g} -> "
                       f"{after_row['equivariance_error']:.4g} ({drop:.1f}x lower)")

    capsys.readouterr()
    main(["vae-equivariance", "--vae", str(start), str(after), "--background", str(held_out["background"]),
          "--reflection", str(held_out["reflection"]), "--n", "8", "--crop-size", "32", "--device", "cpu"])
    printed = capsys.readouterr().out
    for row in (before_row, after_row):
        assert f"{row['equivariance_error']:.4g}" in printed and f"{row['psnr']:.2f}" in printed
    assert "after / before" in printed


def test_permute_pairing_full_finetuning_pixel_form_with_ema_exports(layer_photos, tmp_path):
    """The ablation switches end to end: in-batch pairing, the whole encoder trained, the official
    pixel form, EMA weights exported (no adapters to merge)."""
    torch.manual_seed(0)
    start = tmp_path / "vae_start"
    SimVAE(TINY).save_pretrained(start)
    task, cfg = load_task_config(write_config(tmp_path, layer_photos, start, steps=2), [
        "data.pairing=permute", "data.reflection=[]", "finetune=full", "loss.equivariance_form=pixel",
        "optim.ema_decay=0.9", "trainer.val_every_n_steps=0"])
    run = train(task, cfg)
    ckpt = torch.load(last_checkpoint(run), map_location="cpu", weights_only=True)
    assert not any(".lora_" in k for k in ckpt["state_dict"]) and "current_model_state" in ckpt
    main(["export-vae", str(last_checkpoint(run)), str(tmp_path / "after")])
    after, base = SimVAE.from_pretrained(tmp_path / "after").state_dict(), SimVAE.from_pretrained(start).state_dict()
    assert all(torch.equal(after[k], base[k]) for k in base if not k.startswith("encoder."))  # decoder frozen
    assert not torch.equal(after["encoder.conv_in.weight"], base["encoder.conv_in.weight"])
    assert all(torch.equal(after[k], ckpt["state_dict"]["vae." + k]) for k in after)  # the EMA weights


def test_config_file_loads_and_a_bad_module_name_is_named(layer_photos, tmp_path):
    _, cfg = load_task_config(REPO / "configs" / "re_vae" / "sim_vae_c32_lora.yaml", check=False)
    assert (cfg.finetune, cfg.modules, cfg.lora.rank, cfg.optim.lr, cfg.trainer.max_steps) == ("lora", ["encoder"], 8,
                                                                                                  1e-4, 30_000)
    assert cfg.data.batch_size * cfg.trainer.devices == 128 and cfg.loss.equivariance_form == "latent"

    start = tmp_path / "vae"
    SimVAE(TINY).save_pretrained(start)
    with pytest.raises(ConfigError, match="encodr"):
        load_task_config(write_config(tmp_path, layer_photos, start, steps=1), ["modules=[encodr]"])
    with pytest.raises(ConfigError, match="crop_size"):
        load_task_config(write_config(tmp_path, layer_photos, start, steps=1), ["data.crop_size=33"])
