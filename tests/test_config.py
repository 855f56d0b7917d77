from pathlib import Path

import pytest

from conftest import REPO
from latent_pmrf.config import ConfigError, load_config, to_dict
from latent_pmrf.lightning.restoration_config import FlowTrainConfig
from latent_pmrf.lightning.vae_config import VAETrainConfig
from latent_pmrf.models.baseline_vaes import BASELINE_VAES
from latent_pmrf.models.sim_vae import SimVAEConfig
from latent_pmrf.models.swinir import SwinIRConfig
from latent_pmrf.models.velocity import velocity_preset

VAE_CONFIGS = sorted((REPO / "configs" / "vae").glob("*.yaml"))
LATENT_PMRF_CONFIGS = sorted((REPO / "configs" / "latent_pmrf").glob("*.yaml"))
# Latent-PMRF on each VAE of paper Tables 1 and 3 (and Fig. 9): the paper's "f8cN" is the flow's channel count.
PAPER_VAE_RUNS = {"ffhq512_sd15.yaml": 4, "ffhq512_sdxl.yaml": 4, "ffhq512_flux.yaml": 16,
                  "ffhq512_sd_vae_c32.yaml": 32, "ffhq512_c16.yaml": 16, "ffhq512_c24.yaml": 24,
                  "ffhq512_c32.yaml": 32, "ffhq512_c48.yaml": 48,
                  "ffhq512_c32_group_norm.yaml": 32, "ffhq512_c32_separate_resize.yaml": 32}  # Table 2
BASELINE_VAE_RUNS = ("ffhq512_sd15.yaml", "ffhq512_sdxl.yaml", "ffhq512_flux.yaml")


def load(path, overrides=()):
    return load_config(VAETrainConfig, path, list(overrides), presets=SimVAEConfig.preset)


@pytest.mark.parametrize("path", VAE_CONFIGS, ids=lambda p: p.name)
def test_every_vae_config_loads_and_is_documented(path):
    cfg = load(path)
    assert isinstance(cfg.model, SimVAEConfig)
    assert path.read_text().startswith("#"), f"{path.name} needs a header saying what it reproduces"


def load_flow(path, overrides=()):
    return load_config(FlowTrainConfig, path, list(overrides),
                       presets={"model": velocity_preset, "posterior_mean.model": SwinIRConfig.preset})


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@pytest.mark.parametrize("path", LATENT_PMRF_CONFIGS, ids=lambda p: p.name)
def test_every_latent_pmrf_config_loads_and_is_documented(path):
    cfg = load_flow(path)
    assert cfg.space == "latent" and cfg.model.in_channels == cfg.model.out_channels
    assert path.read_text().startswith("#"), f"{path.name} needs a header saying what it reproduces"


@pytest.mark.parametrize("name", sorted(PAPER_VAE_RUNS))
def test_vae_comparison_runs_change_only_the_vae_and_its_channels(name):
    """Tables 1/3 and Fig. 9 compare VAEs under the main run's recipe (ffhq512_c32.yaml)."""
    path = REPO / "configs" / "latent_pmrf" / name
    cfg = load_flow(path)
    assert cfg.model.in_channels == PAPER_VAE_RUNS[name]
    assert cfg.vae and (cfg.vae in BASELINE_VAES) == (name in BASELINE_VAE_RUNS)
    assert any(word in path.read_text().splitlines()[0] for word in ("Table", "Fig."))
    main, this = flatten(to_dict(load_flow(REPO / "configs/latent_pmrf/ffhq512_c32.yaml"))), flatten(to_dict(cfg))
    allowed = {"vae", "model.in_channels", "model.out_channels", "trainer.output_dir", "convergence.metrics"}
    assert {k for k in main if main[k] != this[k]} <= allowed


def test_paper_run_settings():
    cfg = load(REPO / "configs/vae/sim_vae_c32.yaml")
    assert cfg.model == SimVAEConfig.preset("sim_vae_c32")
    assert (cfg.loss.l1_weight, cfg.loss.perceptual_weight, cfg.loss.kl_weight, cfg.loss.gan_weight) == (1, 0.05, 1e-6, 0)
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay, cfg.optim.grad_clip) == (1e-4, [0.9, 0.99], 0.01, 1.0)
    assert (cfg.optim.warmup_steps, cfg.optim.warmup_start_lr, cfg.optim.min_lr, cfg.optim.ema_decay) == (500, 1e-5, 1e-6, 0.9999)
    assert cfg.data.batch_size * cfg.trainer.devices * cfg.trainer.num_nodes * cfg.trainer.accumulate_grad_batches == 64
    assert (cfg.data.crop_size, cfg.trainer.max_steps, cfg.data.train[1].limit) == (256, 150_000, 10_000)


def test_preset_then_yaml_then_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  preset: sim_vae_c16\n  layers_mid_block: 1\n")
    cfg = load(path, ["model.block_out_channels=[32,64]", "trainer.max_steps=7"])
    assert (cfg.model.latent_channels, cfg.model.layers_mid_block, cfg.model.block_out_channels) == (16, 1, [32, 64])
    assert cfg.trainer.max_steps == 7


@pytest.mark.parametrize("overrides,match", [
    (["trainer.max_step=3"], "max_step"),
    (["data.batch_size=many"], "data.batch_size"),
    (["model.norm_type=batch_norm"], "norm_type"),
    (["trainer.precision=fp8"], "precision"),
    (["model.preset=sim_vae_c99"], "sim_vae_c99"),
    (["data.crop_size=250"], "crop_size"),
])
def test_bad_keys_and_values_are_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load(REPO / "configs/vae/sim_vae_c32.yaml", overrides)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load(Path(tmp_path) / "nope.yaml")


def test_broken_yaml_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(VAETrainConfig, path, [], presets=SimVAEConfig.preset)


def test_base_chain_merges_and_is_checked(tmp_path):
    (tmp_path / "a.yaml").write_text("task: vae\nmodel:\n  preset: sim_vae_c16\ntrainer:\n  max_steps: 5\n"
                                     "data:\n  train: [{root: x}, {root: y}]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("base: ../a.yaml\ntrainer:\n  output_dir: runs/b\ndata:\n  train: [{root: z}]\n")
    cfg = load(tmp_path / "sub" / "b.yaml")
    assert (cfg.model.latent_channels, cfg.trainer.max_steps, cfg.trainer.output_dir) == (16, 5, "runs/b")
    assert [s.root for s in cfg.data.train] == ["z"]  # lists are replaced, not concatenated
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"e\.yaml: base nowhere\.yaml not found"):
        load(tmp_path / "e.yaml")


def test_variant_configs_state_only_what_differs():
    """Every config with a base differs from it in a few keys, and loads as its base would with
    those keys set."""
    for path in VAE_CONFIGS + LATENT_PMRF_CONFIGS:
        text = path.read_text()
        if "\nbase: " in text:
            assert len([l for l in text.splitlines() if l and not l.startswith("#")]) <= 10, path.name


@pytest.mark.parametrize("override,blamed", [
    ("data.batch_size=many", "override 'data.batch_size=many'"),
    ("model.preset=sim_vae_c99", "override 'model.preset=sim_vae_c99'"),
    ("trainer.max_steps=0", "override 'trainer.max_steps=0'"),
])
def test_errors_from_an_override_name_the_override(override, blamed):
    with pytest.raises(ConfigError) as err:
        load(REPO / "configs/vae/sim_vae_c32.yaml", [override])
    assert blamed in str(err.value) and "sim_vae_c32.yaml" in str(err.value)


def test_errors_from_the_file_do_not_blame_an_override(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  max_steps: 0\n")
    with pytest.raises(ConfigError) as err:
        load(path, ["data.batch_size=2"])
    assert "override" not in str(err.value) and "bad.yaml" in str(err.value)
