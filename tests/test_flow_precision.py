"""The frozen posterior-mean net and VAE run in float32 inside a bf16-mixed step (issue 11): the
flow's source Z0 and target X1 must not be bf16-quantised."""

from pathlib import Path

import torch
from conftest import TINY_SWINIR_CFG, save_tiny_frozen_nets

from latent_pmrf.config import load_config
from latent_pmrf.flow import RestorationPipeline
from latent_pmrf.lightning.flow_module import build_pipeline
from latent_pmrf.lightning.restoration_config import FlowTrainConfig
from latent_pmrf.models.swinir import SwinIRConfig
from latent_pmrf.models.velocity import velocity_preset

ROOT = Path(__file__).resolve().parents[1]


def _tiny_flow(tmp_path) -> RestorationPipeline:
    save_tiny_frozen_nets(tmp_path)
    cfg = load_config(FlowTrainConfig, ROOT / "configs/latent_pmrf/ffhq512_c32.yaml", [
        f"vae={tmp_path / 'vae'}", f"posterior_mean.checkpoint={tmp_path / 'pm.pth'}",
        *(f"posterior_mean.model.{k}={v}" for k, v in TINY_SWINIR_CFG.items()),
        "model.preset=hdit_latent_pmrf",
        "model.levels=[{depth: 1, width: 32, d_head: 16, kernel_size: 3, attention: neighborhood},"
        "{depth: 1, width: 64, d_head: 16, attention: global}]",
        "model.mapping_width=32", "model.in_channels=4", "model.out_channels=4"],
        presets={"model": velocity_preset, "posterior_mean.model": SwinIRConfig.preset})
    return build_pipeline(cfg).eval()


def test_frozen_nets_stay_float32_under_bf16_autocast(tmp_path):
    module = _tiny_flow(tmp_path)
    lq, gt = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    torch.manual_seed(1)
    ref0, ref1 = module.flow_endpoints(lq, gt)
    pm_float32 = module.posterior_mean(lq)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x0, x1 = module.flow_endpoints(lq, gt)
        # sanity: autocast is active here, so the frozen net called directly is bf16-quantised
        assert (module.posterior_mean(lq).float() - pm_float32).abs().max() > 1e-4
    assert x0.dtype == x1.dtype == torch.float32
    torch.testing.assert_close(x0, ref0, rtol=0, atol=1e-6)
    torch.testing.assert_close(x1, ref1, rtol=0, atol=1e-6)

    g = [torch.Generator().manual_seed(i) for i in range(2)]
    restored_ref, pm_ref = module.restore(lq, steps=2, generator=g)
    g = [torch.Generator().manual_seed(i) for i in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        restored, pm = module.restore(lq, steps=2, generator=g)
    assert pm.dtype == restored.dtype == torch.float32
    torch.testing.assert_close(pm, pm_ref, rtol=0, atol=1e-6)  # f(y) itself is not quantised
