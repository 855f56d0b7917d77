"""HDiT: presets build (full size on the meta device, shrunk for real), shapes, zero-init output,
time conditioning, gradients, RoPE and cosine-similarity attention against their formulas."""

import dataclasses
import math

import pytest
import torch

from latent_pmrf.models.hdit import (HDIT_PRESETS, HDiT, HDiTConfig, apply_rotary, AxialRoPE, cosine_sim_scale,
                                     make_axial_pos)


def shrunk(preset: str, **overrides) -> HDiTConfig:
    """The preset with its options kept and its sizes cut: widths 32·2^i, d_head 16, depth 1, k=3."""
    cfg = HDiTConfig.preset(preset)
    levels = [dataclasses.replace(lvl, width=32 * 2**i, d_head=16, depth=1, kernel_size=3)
              for i, lvl in enumerate(cfg.levels)]
    return dataclasses.replace(cfg, levels=levels, mapping_width=32, **overrides)


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("preset", sorted(HDIT_PRESETS))
def test_full_presets_build_on_meta(preset):
    with torch.device("meta"):
        model = HDiT(HDiTConfig.preset(preset))
    cfg = model.config
    assert [len(level) for level in model.down_levels] == [lvl.depth for lvl in cfg.levels[:-1]]
    assert len(model.mid_level) == cfg.levels[-1].depth
    kinds = [lvl.attention for lvl in cfg.levels]
    assert kinds == ["neighborhood", "neighborhood", "global"]
    if preset == "hdit_latent_pmrf":
        assert (cfg.in_channels, cfg.patch_size, cfg.patch_embed) == (32, 1, "conv")
        assert [lvl.depth for lvl in cfg.levels] == [2, 4, 6] and cfg.attn_dwconv and cfg.ff_dwconv
    else:
        assert [lvl.width for lvl in cfg.levels] == [256, 512, 1024] and [lvl.depth for lvl in cfg.levels] == [2, 2, 8]
        assert cfg.patch_size == 4 and cfg.levels[0].kernel_size == 7 and cfg.mapping_width == 768


@pytest.mark.parametrize("preset,shape", [("hdit_pmrf", (2, 3, 48, 64)), ("hdit_latent_pmrf", (2, 32, 12, 16))])
def test_shrunk_presets_run(preset, shape):
    model = HDiT(shrunk(preset))
    x, t = torch.randn(shape), torch.rand(shape[0])
    out = model(x, t)
    assert out.shape == shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output projection, as k-diffusion
    model = randomize(model)
    out = model(x, t)
    assert not torch.allclose(out, model(x, 1 - t))  # time conditioning reaches the output
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_bad_shapes_and_configs_are_clear_errors():
    model = HDiT(shrunk("hdit_pmrf"))
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.randn(1, 3, 20, 16), torch.rand(1))
    with pytest.raises(ValueError, match="attention"):
        HDiTConfig(levels=[dict(depth=1, width=32, attention="window", d_head=16)])
    with pytest.raises(ValueError, match="patch_size=1"):
        HDiTConfig.preset("hdit_latent_pmrf", patch_size=2)
    with pytest.raises(KeyError, match="unknown HDiT preset"):
        HDiTConfig.preset("hdit_xl")


def test_rope_makes_scores_depend_on_relative_position_only():
    rope = AxialRoPE(d_head=16, n_heads=2)
    q, k = torch.randn(2, 16), torch.randn(2, 16)

    def score(pq, pk):
        tq, tk = rope(torch.tensor(pq)), rope(torch.tensor(pk))
        return (apply_rotary(q, tq) * apply_rotary(k, tk)).sum(-1)

    torch.testing.assert_close(score([0.1, 0.3], [0.5, -0.2]), score([0.4, 0.0], [0.8, -0.5]))
    assert not torch.allclose(score([0.1, 0.3], [0.5, -0.2]), score([0.1, 0.3], [0.6, -0.2]))
    # frequencies: d_head/8 per head, log-spaced over [π, 10π) across all heads
    freqs = torch.linspace(math.log(math.pi), math.log(10 * math.pi), 2 * 2 + 1)[:-1].exp()
    torch.testing.assert_close(rope.freqs, freqs.view(2, 2).T)


def test_cosine_similarity_scale():
    q, k = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    scale = torch.tensor([10.0, 2.0, 1.0])  # one per head (dim 0)
    qs, ks = cosine_sim_scale(q, k, scale[:, None, None])
    expected = scale[:, None] * torch.nn.functional.cosine_similarity(q, k, dim=-1)
    torch.testing.assert_close((qs * ks).sum(-1), expected, rtol=1e-5, atol=1e-5)


def test_axial_positions():
    pos = make_axial_pos(2, 4)
    assert pos.shape == (2, 4, 2)
    torch.testing.assert_close(pos[..., 1][0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(pos[:, 0, 0], torch.tensor([-0.25, 0.25]))
