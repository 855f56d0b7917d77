"""Importing PMRF's released blind-face model: its key layout, strict loading of a synthetic
release, the [0, 1] -> [-1, 1] velocity conversion, and the errors for missing or wrong files.

How ``fixtures/pmrf_blind_face_keys.json`` was made (once, outside this repository): PMRF's
``arch/``, ``utils/`` and ``lightning_models/`` at github.com/ohayonguy/PMRF commit b6f16a41 were
extracted with ``git archive`` into a scratch folder under /tmp and run with this project's venv.
A throwaway script built ``MMSERectifiedFlow(stage="flow", arch="hdit_ImageNet256Sp4",
mmse_model_arch="swinir_L", mmse_model_ckpt_path=None)`` (the blind-face model) on the CPU (PMRF's
SwinIR calls ``.item()`` while building, which the meta device refuses) and wrote every
``state_dict()`` key with its shape. That script stubbed ``torch_ema`` and ``wandb`` (not installed;
the EMA object holds no module state) and replaced torchmetrics' ``FrechetInceptionDistance`` and
``InceptionScore`` by parameter-free modules (they need torch-fidelity's downloaded Inception
weights), so the fixture has no ``fid.*`` / ``inception_score.*`` keys; the importer skips those.
"""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import randomize
from latent_pmrf.flow.sampler import sample_euler
from latent_pmrf.models.hdit import HDiT, HDiTConfig
from latent_pmrf.models.pmrf_import import (PMRF_REPO_ID, UnitRangeVelocity, load_pmrf_release, pmrf_release_path,
                                            pmrf_state_dict, split_pmrf_state_dict)
from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

FIXTURE = Path(__file__).parent / "fixtures" / "pmrf_blind_face_keys.json"


def pmrf_keys() -> dict[str, list[int]]:
    return json.loads(FIXTURE.read_text())["tensors"]


def tiny_hdit() -> HDiTConfig:
    return HDiTConfig(in_channels=3, out_channels=3, patch_size=4, mapping_depth=2, mapping_width=32, aug_cond=True,
                      levels=[dict(depth=1, width=32, d_head=16, kernel_size=3),
                              dict(depth=1, width=64, d_head=16, attention="global")])


def tiny_swinir() -> SwinIRConfig:
    return SwinIRConfig(embed_dim=12, depths=[2], num_heads=[2], window_size=4, scale=4, img_size=8,
                        upsample_channels=8)


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Init plus noise (HDiT's attention scales, init 10, stay positive; zero-init outputs become live)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def write_release(folder: Path, velocity: HDiT, posterior_mean: SwinIR, config: dict | None = None) -> Path:
    """A file in the release's layout, with a stand-in for the metric modules PMRF saves along."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in pmrf_state_dict(velocity, posterior_mean).items()}
    state["fid.inception.Conv2d_1a_3x3.conv.weight"] = torch.zeros(32, 3, 3, 3)
    save_file(state, str(folder / "model.safetensors"))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder / "model.safetensors"


# ----------------------------------------------------------------------------- key layout
def test_our_modules_hold_exactly_pmrf_keys_and_shapes():
    with torch.device("meta"):
        velocity = HDiT(HDiTConfig.preset("hdit_pmrf"))
    posterior_mean = SwinIR(SwinIRConfig.preset("swinir_difface512"))
    ours = {k: list(v.shape) for k, v in pmrf_state_dict(velocity, posterior_mean).items()}
    expected = pmrf_keys()
    assert sorted(set(expected) - set(ours)) == [] and sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    assert expected["model.aug_emb.weight"] == [768 // 2, 9] and "model.aug_in_proj.weight" in expected


def test_split_maps_pmrf_layout_onto_our_modules():
    state = {k: torch.empty(shape, device="meta") for k, shape in pmrf_keys().items()}
    state["inception_score.inception.fc.weight"] = torch.empty(8, 2, device="meta")  # metric weights are skipped
    velocity, freqs, posterior = split_pmrf_state_dict(state, "fixture")
    with torch.device("meta"):
        hdit = HDiT(HDiTConfig.preset("hdit_pmrf"))
    assert {k: v.shape for k, v in velocity.items()} == {k: v.shape for k, v in hdit.state_dict().items()}
    assert {k: v.shape for k, v in freqs.items()} == {
        k: v.shape for k, v in hdit.named_buffers() if k.endswith("pos_emb.freqs")}
    swinir = SwinIR(SwinIRConfig.preset("swinir_difface512"))
    assert {k: v.shape for k, v in posterior.items()} == {k: v.shape for k, v in swinir.state_dict().items()}

    with pytest.raises(ValueError, match="unexpected keys.*ema.shadow"):
        split_pmrf_state_dict({**state, "ema.shadow": torch.zeros(1)}, "fixture")


def test_aug_conditioning_switch():
    with torch.device("meta"):
        assert not any(k.startswith("aug_") for k in HDiT(HDiTConfig.preset("hdit_latent_pmrf")).state_dict())
    model = perturb(HDiT(tiny_hdit()), seed=3)
    x, t = torch.randn(2, 3, 32, 32), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t, aug=torch.zeros(2, 9)))  # PMRF feeds zeros
        assert not torch.allclose(model(x, t), model(x, t, aug=torch.randn(2, 9)))
    with pytest.raises(ValueError, match=r"aug must have shape \(2, 9\)"):
        model(x, t, aug=torch.zeros(2, 8))
    plain = HDiT(dataclasses.replace(tiny_hdit(), aug_cond=False))
    with pytest.raises(ValueError, match="aug_cond is False"):
        plain(x, t, aug=torch.zeros(2, 9))


# ----------------------------------------------------------------------------- import
def test_import_synthetic_release(tmp_path):
    velocity, posterior_mean = perturb(HDiT(tiny_hdit()), seed=1), randomize(SwinIR(tiny_swinir()), seed=2)
    path = write_release(tmp_path / "release", velocity, posterior_mean,
                         config={"stage": "flow", "arch": "hdit_ImageNet256Sp4", "mmse_model_arch": "swinir_L",
                                 "mmse_noise_std": 0.1, "eps": 0.0})
    release = load_pmrf_release(path.parent, velocity_config=tiny_hdit(), posterior_mean_config=tiny_swinir())

    imported_velocity, imported_pm = release.velocity.net.state_dict(), release.posterior_mean.state_dict()
    assert imported_velocity.keys() == velocity.state_dict().keys()
    assert all(torch.equal(imported_velocity[k], v) for k, v in velocity.state_dict().items())
    assert all(torch.equal(imported_pm[k], v) for k, v in posterior_mean.state_dict().items())
    assert release.source_noise_std == pytest.approx(0.2)
    assert not release.velocity.training and not release.posterior_mean.training

    x, t = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([0.25, 0.75])
    with torch.no_grad():
        assert torch.allclose(release.velocity(x, t), 2 * velocity((x + 1) / 2, t), atol=1e-6)
        assert torch.allclose(release.posterior_mean(x), posterior_mean(x), atol=1e-6)


class ToyVelocity01(torch.nn.Module):
    """v01(u, t) = (c - u)·(1 + t) on [0, 1] images."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = target

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (self.target - u) * (1 + t.to(u.dtype)).view(-1, 1, 1, 1)


def test_unit_range_velocity_integrates_the_same_flow():
    g = torch.Generator().manual_seed(0)
    target, u0 = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.rand(2, 3, 4, 4, generator=g,
                                                                                      dtype=torch.float64)
    steps = 25
    field01 = ToyVelocity01(target)
    u_end = sample_euler(field01, u0, steps)
    x_end = sample_euler(UnitRangeVelocity(field01), u0 * 2 - 1, steps)
    assert torch.allclose(x_end, 2 * u_end - 1, atol=1e-6, rtol=0)
    # Euler's exact discrete solution in [0, 1]: u_K - c = (u_0 - c)·Π_i (1 - (1 + t_i)/K), t_i = i/K
    factor = torch.prod(torch.tensor([1 - (1 + i / steps) / steps for i in range(steps)], dtype=torch.float64))
    assert torch.allclose(u_end, target + (u0 - target) * factor, atol=1e-6, rtol=0)  # t is float32


# ----------------------------------------------------------------------------- errors
def test_missing_release_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=f"absent.*huggingface-cli download {PMRF_REPO_ID} --local-dir"):
        load_pmrf_release(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*does not exist.*huggingface-cli download"):
        load_pmrf_release(tmp_path)  # a folder without model.safetensors

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="Hugging Face cache.*models--ohayonguy--PMRF.*huggingface-cli"):
        pmrf_release_path()
    snapshot = tmp_path / "hf" / "models--ohayonguy--PMRF_blind_face_image_restoration"
    (snapshot / "snapshots" / "abc").mkdir(parents=True)
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text("abc")
    (snapshot / "snapshots" / "abc" / "model.safetensors").write_bytes(b"")
    assert pmrf_release_path() == snapshot / "snapshots" / "abc" / "model.safetensors"


def test_wrong_files_are_clear_errors(tmp_path):
    velocity, posterior_mean = HDiT(tiny_hdit()), SwinIR(tiny_swinir())
    configs = dict(velocity_config=tiny_hdit(), posterior_mean_config=tiny_swinir())

    garbage = tmp_path / "garbage" / "model.safetensors"
    garbage.parent.mkdir()
    garbage.write_text("not a tensor file")
    with pytest.raises(ValueError, match=f"{re.escape(str(garbage))}.*not a readable safetensors file"):
        load_pmrf_release(garbage, **configs)

    only_swinir = tmp_path / "swinir.safetensors"
    save_file({k: v.contiguous() for k, v in posterior_mean.state_dict().items()}, str(only_swinir))
    with pytest.raises(ValueError, match=f"{re.escape(str(only_swinir))} is not PMRF's MMSERectifiedFlow.*prefixes"):
        load_pmrf_release(only_swinir, **configs)

    no_aug = write_release(tmp_path / "no_aug", velocity, posterior_mean)
    state = {k: v for k, v in load_file(str(no_aug)).items() if not k.startswith("model.aug_in_proj")}
    save_file(state, str(no_aug))
    with pytest.raises(ValueError, match=r"no_aug/model\.safetensors \('model\.\*' as our HDiT\).*aug_in_proj"):
        load_pmrf_release(no_aug, **configs)

    bad_rope = write_release(tmp_path / "bad_rope", velocity, posterior_mean)
    state = load_file(str(bad_rope))
    key = next(k for k in state if k.endswith("pos_emb.freqs"))
    state[key] = state[key].T.contiguous().reshape(state[key].shape)  # heads and frequencies interleaved wrongly
    save_file(state, str(bad_rope))
    with pytest.raises(ValueError, match="RoPE frequencies do not match"):
        load_pmrf_release(bad_rope, **configs)

    other_model = write_release(tmp_path / "xl2", velocity, posterior_mean, config={"arch": "hdit_XL2"})
    with pytest.raises(ValueError, match=r"config\.json describes another PMRF model.*hdit_XL2"):
        load_pmrf_release(other_model, **configs)

    training_ckpt = tmp_path / "blind_face_restoration_pmrf.ckpt"
    torch.save({"state_dict": pmrf_state_dict(velocity, posterior_mean), "ema": {"shadow_params": []}}, training_ckpt)
    with pytest.raises(ValueError, match="EMA weights are stored apart"):
        load_pmrf_release(training_ckpt, **configs)


def test_restore_runs_pmrf_release_as_pmrf_samples(tmp_path):
    """Table 4's PMRF row from the released weights: our restore of the imported release equals
    PMRF's own sampler written out in its [0, 1] space (u0 = clip(f01(y)) + 0.1·ε, K uniform Euler
    steps of the [0, 1] network), mapped to [-1, 1]."""
    from latent_pmrf.flow import RestorationPipeline

    velocity, posterior_mean = perturb(HDiT(tiny_hdit()), 1), perturb(SwinIR(tiny_swinir()), 2)
    path = write_release(tmp_path / "release", velocity, posterior_mean)
    module = RestorationPipeline.from_pmrf_release(path.parent, velocity_config=tiny_hdit(), posterior_mean_config=tiny_swinir())
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    restored, _ = module.restore(y, steps=3, generator=torch.Generator().manual_seed(5))

    with torch.no_grad():
        f01 = ((posterior_mean(y) + 1) / 2).clamp(0, 1)  # PMRF's SwinIR output on [0, 1] images
        eps = torch.randn(f01.shape, generator=torch.Generator().manual_seed(5))
        u = f01 + 0.1 * eps
        for i in range(3):
            u = u + velocity(u, torch.full((1,), i / 3)) / 3
    torch.testing.assert_close(restored, (2 * u - 1).clamp(-1, 1), rtol=0, atol=1e-5)
