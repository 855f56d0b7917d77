"""Speed switches that must not change results: activation checkpointing of the velocity nets
(gradients equal to the stored-activation ones) and ``torch.compile`` in place (same state-dict
keys, outputs equal to eager within float rounding; the timing is benchmarks/train_step.py's)."""

import dataclasses

import pytest
import torch
from conftest import randomize, tiny_vae_overrides

import latent_pmrf.models.checkpointing as checkpointing
from latent_pmrf.models.compile import compile_module
from latent_pmrf.models.hdit import HDiT, HDiTConfig
from latent_pmrf.models.looformer import LooUFormer, LooUFormerConfig
from latent_pmrf.models.sim_vae import SimVAE, SimVAEConfig


def tiny_hdit(**overrides) -> HDiTConfig:
    cfg = HDiTConfig.preset("hdit_latent_pmrf")
    levels = [dataclasses.replace(lvl, width=32 * 2**i, d_head=16, depth=2, kernel_size=3)
              for i, lvl in enumerate(cfg.levels)]
    return dataclasses.replace(cfg, in_channels=4, out_channels=4, levels=levels, mapping_width=32, **overrides)


def tiny_looformer(**overrides) -> LooUFormerConfig:
    values = dict(in_channels=4, out_channels=4, time_embed_dim=32,
                  levels=[dict(depth=2, width=16, head_dim=8, kernel_size=3),
                          dict(depth=2, width=32, head_dim=8, kernel_size=3),
                          dict(depth=1, width=32, head_dim=8, attention="global")])
    return LooUFormerConfig(**{**values, **overrides})


NETS = {"hdit": (HDiT, tiny_hdit), "looformer": (LooUFormer, tiny_looformer)}


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The init plus noise, so zero-initialised output layers pass gradients everywhere (conftest's
    fan-in randomisation overflows HDiT's GEGLU stack)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


def gradients(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    net(x, t).square().mean().backward()
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", sorted(NETS))
def test_activation_checkpointing_recomputes_and_keeps_the_gradients(family, monkeypatch):
    cls, config = NETS[family]
    plain = perturb(cls(config()), seed=1).train()
    recomputing = cls(config(activation_checkpointing=True)).train()
    recomputing.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 4, 32, 32), torch.rand(2)

    calls = []
    real = checkpointing.checkpoint
    monkeypatch.setattr(checkpointing, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    expected = gradients(plain, x, t)
    assert not calls  # off by default
    assert all(torch.isfinite(g).all() for g in expected.values())
    got = gradients(recomputing, x, t)
    blocks = sum(lvl.depth for lvl in recomputing.config.levels) + sum(lvl.depth for lvl in recomputing.config.levels[:-1])
    assert len(calls) == blocks  # every block of the down, mid and up levels
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():  # sampling does not recompute anything
        calls.clear()
        torch.testing.assert_close(recomputing(x, t), plain(x, t), rtol=0, atol=0)
        assert not calls


def test_compile_is_in_place_and_keeps_the_checkpoint_keys():
    velocity = HDiT(tiny_hdit())
    keys = list(velocity.state_dict())
    assert compile_module(velocity) is velocity and velocity._compiled_call_impl is not None
    assert list(velocity.state_dict()) == keys  # not torch.compile(module)'s "_orig_mod." keys
    vae = SimVAE(SimVAEConfig.preset("sim_vae_c16", **tiny_vae_overrides()))
    compile_module(vae)  # its encoder and decoder: encode, decode and forward all compiled
    assert vae.encoder._compiled_call_impl is not None and vae.decoder._compiled_call_impl is not None


@pytest.mark.slow
def test_compiled_vae_training_step_equals_eager():
    """Inductor on the CPU: loss and gradients of a training step equal eager ones to 1e-5 (relative)."""
    eager = randomize(SimVAE(SimVAEConfig.preset("sim_vae_c16", **tiny_vae_overrides())), seed=2).train()
    compiled = SimVAE(eager.config)
    compiled.load_state_dict(eager.state_dict())
    compile_module(compiled.train())
    x = torch.rand(2, 3, 32, 32) * 2 - 1

    def step(vae: SimVAE) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        recon, posterior = vae(x, sample_posterior=False)
        loss = (recon - x).abs().mean() + 1e-6 * posterior.kl().mean()
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in vae.named_parameters()}

    (loss_e, grads_e), (loss_c, grads_c) = step(eager), step(compiled)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    for name, grad in grads_e.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-4, atol=1e-5, msg=name)
