"""Where the pieces meet (issue 12): inference without Lightning, a CLI whose help needs no torch,
and the task table as the one way into training."""

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

SUBCOMMANDS = ["train", "export-vae", "vae-latent-stats", "quickstart", "degrade-preview", "restore", "reconstruct",
               "plot-convergence", "plot-pd", "evaluate", "metrics", "weights", "model-info", "table"]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=300)


def test_help_imports_no_torch():
    proc = _python(f"""
        import sys
        from latent_pmrf.cli.main import build_parser
        parser = build_parser()
        for command in {SUBCOMMANDS!r}:
            try:
                parser.parse_args([command, "--help"])
            except SystemExit:
                pass
        assert "torch" not in sys.modules, "torch imported while building or printing help"
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_restore_and_evaluate_run_without_lightning(tmp_path):
    proc = _python(f"""
        import sys
        from pathlib import Path
        import numpy as np, torch
        from PIL import Image
        import latent_pmrf.cli.restore, latent_pmrf.metrics.evaluate
        from latent_pmrf.flow import RestorationPipeline
        from latent_pmrf.models.hdit import HDiT, HDiTConfig
        from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

        torch.manual_seed(0)
        velocity = HDiT(HDiTConfig(patch_size=2, mapping_width=32, levels=[
            dict(depth=1, width=32, d_head=16, kernel_size=3), dict(depth=1, width=64, d_head=16, attention="global")]))
        swinir = SwinIR(SwinIRConfig(embed_dim=12, depths=[1], num_heads=[2], window_size=4, scale=4, img_size=16,
                                     upsample_channels=8))
        RestorationPipeline(swinir, velocity, None, source_noise_std=0.2).save_pretrained(r"{tmp_path}/pipe")
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(r"{tmp_path}/a.png")
        summary = latent_pmrf.cli.restore.restore(r"{tmp_path}/pipe", r"{tmp_path}/a.png", r"{tmp_path}/out", steps=2)
        assert [p.name for p in summary.written] == ["a.png"]
        assert "lightning" not in sys.modules and "pytorch_lightning" not in sys.modules
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_pipeline_round_trips_through_save_pretrained(tmp_path):
    import torch

    from latent_pmrf.flow import RestorationPipeline
    from latent_pmrf.models.looformer import LooUFormer, LooUFormerConfig
    from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
    from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

    torch.manual_seed(0)
    vae = SimVAE(SimVAEConfig(block_out_channels=[8, 8, 8, 8], layers_per_block=1, layers_mid_block=1,
                              latent_channels=4))
    velocity = LooUFormer(LooUFormerConfig(in_channels=4, out_channels=4, time_embed_dim=32, levels=[
        dict(depth=1, width=32, head_dim=16, kernel_size=3), dict(depth=1, width=64, head_dim=16, attention="global")]))
    swinir = SwinIR(SwinIRConfig(embed_dim=12, depths=[1], num_heads=[2], window_size=4, scale=4, img_size=16,
                                 upsample_channels=8))
    pipeline = RestorationPipeline(swinir, velocity, vae, sampler="flow_match_euler").eval()
    pipeline.save_pretrained(tmp_path / "p")
    again = RestorationPipeline.from_pretrained(tmp_path / "p")
    assert again.sampler == "flow_match_euler" and again.size_multiple == 16
    lq = torch.rand(1, 3, 32, 32) * 2 - 1
    a, _ = pipeline.restore(lq, 2, generator=torch.Generator().manual_seed(3))
    b, _ = again.restore(lq, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_wrong_files_for_restore_are_one_line_errors(tmp_path):
    import torch

    from latent_pmrf.flow import load_restoration

    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.ckpt: not a readable PyTorch checkpoint"):
        load_restoration(tmp_path / "junk.ckpt")
    torch.save({"hyper_parameters": {"config": {"task": "vae"}}, "state_dict": {}}, tmp_path / "vae.ckpt")
    with pytest.raises(ValueError, match=r"vae\.ckpt: not a latent-pmrf flow checkpoint.*vae checkpoint"):
        load_restoration(tmp_path / "vae.ckpt")
    torch.save({"hyper_parameters": {"config": {}, "frozen_configs": {}}, "state_dict": {}}, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match="older latent-pmrf"):
        load_restoration(tmp_path / "old.ckpt")


def test_every_training_config_loads_and_builds_on_the_meta_device():
    """Every YAML under configs/ is parsed, validated and its model built on the meta device (SwinIR,
    whose constructor reads tensor values, on the CPU), without any weight file."""
    import torch

    from latent_pmrf.lightning.tasks import load_task_config
    from latent_pmrf.models.lora import prepare_finetuning
    from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig
    from latent_pmrf.models.swinir import SwinIR
    from latent_pmrf.models.velocity import build_velocity

    def re_vae(cfg):  # a re-VAE config names a snapshot: build the c32 architecture with its adapters
        model = SimVAE(SimVAEConfig.preset("sim_vae_c32"))
        prepare_finetuning(model, cfg.modules, cfg.lora_or_none)
        return model

    configs = sorted(p for p in (REPO / "configs").rglob("*.yaml"))
    assert len(configs) >= 24
    for path in configs:
        task, cfg = load_task_config(path, check=False)
        with torch.device("cpu" if task.name == "posterior_mean" else "meta"):
            model = {"vae": lambda: SimVAE(cfg.model), "posterior_mean": lambda: SwinIR(cfg.model),
                     "flow": lambda: build_velocity(cfg.model), "re_vae": lambda: re_vae(cfg)}[task.name]()
        assert sum(p.numel() for p in model.parameters()) > 0, path


def test_config_errors_come_before_any_weight_file(tmp_path):
    from latent_pmrf.config import ConfigError
    from latent_pmrf.lightning.tasks import load_task_config

    c32 = REPO / "configs/latent_pmrf/ffhq512_c32.yaml"
    with pytest.raises(ConfigError, match="data.train\\[0\\].root: folder not found"):
        load_task_config(c32, [f"data.train=[{{root: {tmp_path / 'none'}}}]"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images in"):
        load_task_config(c32, [f"data.train=[{{root: {tmp_path / 'empty'}}}]", "data.val_dir=null"])
    with pytest.raises(ConfigError, match="trainer.val_every_n_steps must be >= 0"):
        load_task_config(c32, ["trainer.val_every_n_steps=-1"])
    with pytest.raises(ConfigError, match="on_read_error"):
        load_task_config(c32, ["data.on_read_error=ignore"])
    from PIL import Image

    from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig

    SimVAE(SimVAEConfig(block_out_channels=[8, 8], layers_per_block=1, latent_channels=32)).save_pretrained(
        tmp_path / "vae")  # f2c32: only its config.json is read by the checks
    (tmp_path / "hq").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "hq" / "a.png")
    data = [f"vae={tmp_path / 'vae'}", f"data.train=[{{root: {tmp_path / 'hq'}}}]", "data.val_dir=null",
            "convergence.every_n_steps=0"]
    with pytest.raises(ConfigError, match="are 16/16 but vae .* has 32 latent channels"):
        load_task_config(c32, [*data, "model.in_channels=16", "model.out_channels=16"])
    with pytest.raises(ConfigError, match="crop_size=100 must be a multiple of 8"):  # f2 × LooUFormer's 4
        load_task_config(c32, [*data, "data.crop_size=100"])
    task, cfg = load_task_config(c32, [*data, "data.crop_size=64"])
    assert task.name == "flow" and cfg.data.crop_size == 64
    with pytest.raises(ConfigError, match="task 'nope' is not one of"):
        load_task_config(c32, ["task=nope"])
