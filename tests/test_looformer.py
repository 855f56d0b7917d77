"""LooUFormer (the official Latent-PMRF velocity net): the Table 4 parameter count, tiny configs over
every switch (shapes, gradients), attention against a brute-force loop, and the time convention."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize

from latent_pmrf.flow.rectified_flow import flow_matching_loss
from latent_pmrf.models.hdit import make_axial_pos
from latent_pmrf.models.looformer import LooUFormer, LooUFormerConfig, round_to_64


def tiny(**overrides) -> LooUFormerConfig:
    """4 channels, widths 16/32/32, head_dim 8, depth 1 per level, NA kernel 3, time width 32."""
    values = dict(in_channels=4, out_channels=4, time_embed_dim=32,
                  levels=[dict(depth=1, width=16, head_dim=8, kernel_size=3),
                          dict(depth=1, width=32, head_dim=8, kernel_size=3),
                          dict(depth=1, width=32, head_dim=8, attention="global")])
    return LooUFormerConfig(**{**values, **overrides})


def test_preset_matches_table4_parameter_count():
    cfg = LooUFormerConfig.preset("latent_pmrf_official")
    with torch.device("meta"):
        model = LooUFormer(cfg)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert abs(n_trainable - 151.2e6) <= 0.05e6, n_trainable  # Table 4: 151.2 M trainable
    assert n_trainable == 151_209_506
    assert [lvl.depth for lvl in cfg.levels] == [2, 4, 6]  # Sec. 4.1
    assert [lvl.attention for lvl in cfg.levels] == ["neighborhood", "neighborhood", "global"]
    assert (cfg.in_channels, cfg.patch_size, cfg.patch_embed, cfg.dwconv) == (32, 1, "conv", True)
    assert cfg.multiple == 4 and 64 % cfg.multiple == 0  # 64² latents of 512² images
    assert [len(level) for level in model.down_levels] == [2, 4] and len(model.mid_level) == 6


@pytest.mark.parametrize("overrides", [
    {},
    dict(patch_embed="pixel_shuffle", patch_size=2),
    dict(downsample_method="pixel_unshuffle+conv", downsample_kernel_size=1,
         upsample_method="pixel_shuffle", upsample_kernel_size=1),
    dict(downsample_method="conv+pixel_unshuffle"),
    dict(dwconv=False, use_bias=False),
    dict(time_embed_dim=None),
    dict(time_embed_log_space=True, time_embed_freq_scale=0.5, mapping_layers=1),
], ids=["default", "patch2", "pixel_shuffle_resizers", "conv_unshuffle", "no_dwconv_no_bias", "no_time", "log_time"])
def test_tiny_forward_backward_reaches_every_parameter(overrides):
    torch.manual_seed(0)
    model = randomize(LooUFormer(tiny(**overrides)))
    x, t = torch.randn(2, 4, 16, 16), torch.rand(2) * 0.9 + 0.05
    out = model(x, t)
    assert out.shape == x.shape
    out.square().mean().backward()
    dead = [n for n, p in model.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all() or torch.count_nonzero(p.grad) == 0]
    assert not dead
    if model.config.time_embed_dim is not None:
        assert not torch.allclose(out, model(x, 1 - t))  # time conditioning reaches the output


def test_initialisation_and_zero_init_switch():
    torch.manual_seed(0)
    x, t = torch.randn(1, 4, 16, 16), torch.rand(1)
    assert torch.count_nonzero(LooUFormer(tiny())(x, t)) > 0  # official default: no zero-init
    assert torch.count_nonzero(LooUFormer(tiny(zero_init_last_layer=True))(x, t)) == 0
    model = LooUFormer(tiny())
    assert all(torch.all(up.fac == 0.5) for up in model.upsamples)
    assert round_to_64(3 * 768) == 2304 and round_to_64(96) == 64 and round_to_64(97) == 128


def reference_attention(attn, x: torch.Tensor, kernel_size: int | None) -> torch.Tensor:
    """Independent attention: convs by F.conv2d, (y, x) positions from their formula, RoPE as a
    complex rotation, and a loop over queries, each softmax-attending to its k×k window shifted
    inside the map at the borders (the whole map when kernel_size is None)."""
    b, c, h, w = x.shape
    n_heads, d = attn.n_heads, attn.head_dim
    pw, dw = attn.qkv_proj.pointwise, attn.qkv_proj.depthwise
    qkv = F.conv2d(F.conv2d(x, pw.weight, pw.bias), dw.weight, dw.bias, padding=1, groups=3 * c)
    q, k, v = qkv.reshape(b, 3, n_heads, d, h, w).permute(1, 0, 4, 5, 2, 3)  # 3 × (B, H, W, heads, d)

    # token centres in a box whose longer side spans [-1, 1]
    ys = ((torch.arange(h, dtype=x.dtype) + 0.5) * 2 / h - 1) * min(1.0, h / w)
    xs = ((torch.arange(w, dtype=x.dtype) + 0.5) * 2 / w - 1) * min(1.0, w / h)
    # d/8 frequencies per head and axis: head j takes every n_heads-th of n_heads·d/8 log-spaced in [π, 10π)
    n_freqs = d // 8
    base = torch.linspace(math.log(math.pi), math.log(10 * math.pi), n_heads * n_freqs + 1, dtype=x.dtype)[:-1].exp()
    freqs = torch.stack([base[j::n_heads] for j in range(n_heads)])  # (heads, d/8)
    grid = (h, w, n_heads, n_freqs)
    angles = torch.cat([(ys[:, None, None, None] * freqs).expand(grid),
                        (xs[None, :, None, None] * freqs).expand(grid)], dim=-1)  # (H, W, heads, d/4)

    def rotate(t):
        r = angles.shape[-1]
        z = torch.complex(t[..., :r], t[..., r:2 * r]) * torch.polar(torch.ones_like(angles), angles)
        return torch.cat([z.real, z.imag, t[..., 2 * r:]], dim=-1)

    q, k = rotate(q), rotate(k)
    kh, kw = (h, w) if kernel_size is None else (kernel_size, kernel_size)
    out = torch.empty_like(v)
    for i in range(h):
        r0 = min(max(i - kh // 2, 0), h - kh)
        for j in range(w):
            c0 = min(max(j - kw // 2, 0), w - kw)
            keys = k[:, r0:r0 + kh, c0:c0 + kw].reshape(b, kh * kw, n_heads, d)
            values = v[:, r0:r0 + kh, c0:c0 + kw].reshape(b, kh * kw, n_heads, d)
            weights = (torch.einsum("bne,bmne->bnm", q[:, i, j], keys) / math.sqrt(d)).softmax(dim=-1)
            out[:, i, j] = torch.einsum("bnm,bmne->bne", weights, values)
    out = out.reshape(b, h, w, n_heads * d).permute(0, 3, 1, 2)
    return F.conv2d(out, attn.out_proj.weight, attn.out_proj.bias)


@pytest.mark.parametrize("level,kernel_size,shape", [(0, 3, (7, 10)), (0, 5, (6, 9)), (2, None, (5, 8))])
def test_attention_matches_brute_force_loop(level, kernel_size, shape):
    torch.manual_seed(0)
    levels = [dict(depth=1, width=16, head_dim=8, kernel_size=kernel_size or 3),
              dict(depth=1, width=16, head_dim=8, kernel_size=3),
              dict(depth=1, width=16, head_dim=8, attention="global")]
    model = randomize(LooUFormer(tiny(levels=levels))).double()
    attn = (model.down_levels[level] if level < 2 else model.mid_level)[0].attn
    assert attn.kernel_size == kernel_size and attn.n_heads == 2
    x = torch.randn(2, 16, *shape, dtype=torch.float64)
    with torch.no_grad():
        out = attn(x, make_axial_pos(*shape))
        ref = reference_attention(attn, x, kernel_size)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_time_convention_sigma_is_one_minus_t_and_velocity_flips_sign():
    """Ours: x_t = t·clean + (1-t)·source, target clean - source. Official (pipeline_fm.py and its
    scheduler): x_σ = σ·source + (1-σ)·clean, target source - clean, net called with σ."""
    torch.manual_seed(0)
    model = randomize(LooUFormer(tiny()))
    x, t = torch.randn(3, 4, 16, 16), torch.tensor([0.0, 0.3, 0.9])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), -model.forward_official(x, 1 - t))
        assert not torch.allclose(model.forward_official(x, t), model.forward_official(x, 1 - t))

        source, clean = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16)
        sigma = (1 - t)[:, None, None, None]
        official_loss = F.mse_loss(model.forward_official(sigma * source + (1 - sigma) * clean, 1 - t), source - clean)
        torch.testing.assert_close(flow_matching_loss(model, source, clean, t), official_loss)


def test_bad_inputs_and_configs_are_clear_errors():
    model = LooUFormer(tiny())
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.randn(1, 4, 18, 16), torch.rand(1))
    with pytest.raises(ValueError, match="attention"):
        tiny(levels=[dict(depth=1, width=16, head_dim=8, attention="window")])
    with pytest.raises(ValueError, match="patch_size=1"):
        tiny(patch_size=2)
    with pytest.raises(ValueError, match="downsample_method"):
        tiny(downsample_method="avgpool")
    with pytest.raises(KeyError, match="unknown LooUFormer preset"):
        LooUFormerConfig.preset("looformer_xl")
