import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize
from latent_pmrf.models.swinir import (
    SWINIR_PRESETS,
    SwinIR,
    SwinIRConfig,
    WindowAttention,
    load_swinir_checkpoint,
    read_swinir_state_dict,
)
from latent_pmrf.weights import SWINIR_DIFFACE_URL, WEIGHT_FILES

SWINIR_WEIGHTS_FILE = WEIGHT_FILES["swinir_difface"].filename

DIFFACE_MEAN = (0.4488, 0.4371, 0.4040)


def tiny_config(**overrides) -> SwinIRConfig:
    """Two stages, window 4 (shift 2: all three mask regions), unshuffle x4, stored grid 8x8."""
    base = {"embed_dim": 12, "depths": [2, 2], "num_heads": [2, 3], "window_size": 4, "scale": 4, "img_size": 8,
            "upsample_channels": 8}
    return SwinIRConfig(**{**base, **overrides})


# ----------------------------------------------------------------- the released layout
def official_difface512_layout() -> dict[str, tuple[int, ...]]:
    """Every state-dict entry of DifFace's models/swinir.py SwinIR(img_size=64, patch_size=1,
    in_chans=3, embed_dim=180, depths=[6]*8, num_heads=[6]*8, window_size=8, mlp_ratio=2, sf=8,
    img_range=1., upsampler="nearest+conv", resi_connection="1conv", unshuffle=True,
    unshuffle_scale=8), written out from that definition: conv_first is Sequential(PixelUnshuffle(8),
    Conv2d(192, 180)); relative_position_index and the shifted blocks' attn_mask are persistent
    buffers; the RSTB-internal PatchEmbed/PatchUnEmbed have no weights."""
    layout = {
        "conv_first.1.weight": (180, 192, 3, 3), "conv_first.1.bias": (180,),
        "patch_embed.norm.weight": (180,), "patch_embed.norm.bias": (180,),
    }
    for i in range(8):
        for j in range(6):
            p = f"layers.{i}.residual_group.blocks.{j}."
            if j % 2:
                layout[p + "attn_mask"] = (64, 64, 64)  # 64 windows of 8x8 tokens on the 64x64 grid
            layout.update({
                p + "norm1.weight": (180,), p + "norm1.bias": (180,),
                p + "attn.relative_position_bias_table": (225, 6), p + "attn.relative_position_index": (64, 64),
                p + "attn.qkv.weight": (540, 180), p + "attn.qkv.bias": (540,),
                p + "attn.proj.weight": (180, 180), p + "attn.proj.bias": (180,),
                p + "norm2.weight": (180,), p + "norm2.bias": (180,),
                p + "mlp.fc1.weight": (360, 180), p + "mlp.fc1.bias": (360,),
                p + "mlp.fc2.weight": (180, 360), p + "mlp.fc2.bias": (180,),
            })
        layout[f"layers.{i}.conv.weight"] = (180, 180, 3, 3)
        layout[f"layers.{i}.conv.bias"] = (180,)
    layout.update({
        "norm.weight": (180,), "norm.bias": (180,),
        "conv_after_body.weight": (180, 180, 3, 3), "conv_after_body.bias": (180,),
        "conv_before_upsample.0.weight": (64, 180, 3, 3), "conv_before_upsample.0.bias": (64,),
        "conv_up1.weight": (64, 64, 3, 3), "conv_up1.bias": (64,),
        "conv_up2.weight": (64, 64, 3, 3), "conv_up2.bias": (64,),
        "conv_up3.weight": (64, 64, 3, 3), "conv_up3.bias": (64,),
        "conv_hr.weight": (64, 64, 3, 3), "conv_hr.bias": (64,),
        "conv_last.weight": (3, 64, 3, 3), "conv_last.bias": (3,),
    })
    return layout


@pytest.fixture(scope="module")
def difface512() -> SwinIR:
    return SwinIR(SwinIRConfig.preset("swinir_difface512"))


def test_difface512_keys_and_shapes(difface512):
    ours = {k: tuple(v.shape) for k, v in difface512.state_dict().items()}
    assert ours == official_difface512_layout()
    assert len(ours) == 732  # 660 parameters + 48 relative_position_index + 24 attn_mask
    # 15.79M, the count DifFace's trainer prints for this architecture (DifFace issue #9).
    assert sum(p.numel() for p in difface512.parameters()) == 15_792_587


def test_difface512_buffers_equal_the_official_construction(difface512):
    sd = difface512.state_dict()
    index = reference_relative_position_index(8)
    mask = reference_shift_mask(64, 64, 8, 4)
    for key, value in sd.items():
        if key.endswith("relative_position_index"):
            assert value.dtype == torch.int64 and torch.equal(value, index), key
        if key.endswith("attn_mask"):
            assert torch.equal(value, mask), key


@pytest.mark.slow
def test_difface512_round_trip_in_the_released_wrapping(difface512, tmp_path):
    """DifFace's trainer saves {'iters_start', 'log_step', 'log_step_img', 'state_dict'} from a DDP model."""
    with torch.no_grad():  # weights are random already; make biases and norms non-trivial too
        for p in difface512.parameters():
            if p.ndim == 1:
                p.uniform_(-1, 1)
    path = tmp_path / SWINIR_WEIGHTS_FILE
    torch.save(official_wrapping(difface512.state_dict(), "difface"), path)
    loaded = load_swinir_checkpoint(path)
    assert not loaded.training
    ours = loaded.state_dict()
    for key, value in difface512.state_dict().items():
        assert torch.equal(ours[key], value), key


def test_pmrf_m_preset():
    model = SwinIR(SwinIRConfig.preset("swinir_pmrf_m"))
    assert sum(p.numel() for p in model.parameters()) == 4_741_007  # PMRF create_arch("swinir_M")
    assert model.state_dict()["conv_first.1.weight"].shape == (120, 192, 3, 3)
    assert len(model.layers) == 5


def test_presets_and_validation():
    assert set(SWINIR_PRESETS) >= {"swinir_difface512", "swinir_pmrf_m"}
    assert SwinIRConfig.preset("swinir_difface512") == SwinIRConfig()
    assert SwinIRConfig.preset("swinir_difface512", embed_dim=60).embed_dim == 60
    with pytest.raises(KeyError, match="swinir_difface512"):
        SwinIRConfig.preset("swinir_nope")


@pytest.mark.parametrize("overrides, field", [
    ({"num_heads": [6] * 7}, "num_heads"),
    ({"num_heads": [7] * 8}, "num_heads"),
    ({"scale": 6}, "scale"),
    ({"scale": 1}, "scale"),
    ({"window_size": 1}, "window_size"),
    ({"img_size": 8}, "img_size"),
    ({"img_size": 60}, "img_size"),
    ({"image_mean": [0.5, 0.5]}, "image_mean"),
    ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ({"depths": []}, "depths"),
])
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        SwinIRConfig(**overrides)


# ----------------------------------------------------------------- independent reference (official style)
def reference_relative_position_index(ws: int) -> torch.Tensor:
    n = ws * ws
    index = torch.empty(n, n, dtype=torch.int64)
    for i in range(n):
        for j in range(n):
            (yi, xi), (yj, xj) = divmod(i, ws), divmod(j, ws)
            index[i, j] = (yi - yj + ws - 1) * (2 * ws - 1) + (xi - xj + ws - 1)
    return index


def reference_window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B*nW, ws, ws, C), windows in row-major order per image."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def reference_window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    b = windows.shape[0] // (h * w // ws // ws)
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def reference_shift_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Official construction: label the 3x3 slice regions, partition, -100 where labels differ."""
    labels = torch.zeros(1, h, w, 1)
    regions = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    count = 0
    for hs in regions:
        for wsl in regions:
            labels[:, hs, wsl, :] = count
            count += 1
    windows = reference_window_partition(labels, ws).view(-1, ws * ws)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def naive_window_attention(x, sd, prefix, heads, ws, mask):
    """softmax(q*scale @ k^T + bias + mask) @ v on (B*nW, N, C), the classic formula."""
    b_, n, c = x.shape
    qkv = F.linear(x, sd[prefix + "qkv.weight"], sd[prefix + "qkv.bias"])
    qkv = qkv.reshape(b_, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    table = sd[prefix + "relative_position_bias_table"]
    bias = table[reference_relative_position_index(ws).view(-1)].view(n, n, heads).permute(2, 0, 1)
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(b_ // nw, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    attn = torch.softmax(attn, dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(b_, n, c)
    return F.linear(out, sd[prefix + "proj.weight"], sd[prefix + "proj.bias"])


def _layer_norm(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], eps=1e-5)


def _conv(x, sd, prefix):
    return F.conv2d(x, sd[prefix + ".weight"], sd[prefix + ".bias"], padding=1)


def reference_block(x, sd, prefix, h, w, heads, ws, shift):
    """Official SwinTransformerBlock.forward on (B, L, C) tokens, mask computed for this size."""
    b, _, c = x.shape
    shortcut = x
    x = _layer_norm(x, sd, prefix + "norm1").view(b, h, w, c)
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    windows = reference_window_partition(x, ws).view(-1, ws * ws, c)
    mask = reference_shift_mask(h, w, ws, shift).to(x.dtype) if shift else None
    windows = naive_window_attention(windows, sd, prefix + "attn.", heads, ws, mask)
    x = reference_window_reverse(windows.view(-1, ws, ws, c), ws, h, w)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + x.reshape(b, h * w, c)
    hidden = F.gelu(F.linear(_layer_norm(x, sd, prefix + "norm2"), sd[prefix + "mlp.fc1.weight"], sd[prefix + "mlp.fc1.bias"]))
    return x + F.linear(hidden, sd[prefix + "mlp.fc2.weight"], sd[prefix + "mlp.fc2.bias"])


def reference_swinir(x01, sd, cfg, pad_mode="reflect"):
    """Official DifFace SwinIR.forward on a raw state dict: [0, 1] in, [0, 1] out. Pads to
    scale*window (the official only pads to window, which suffices at 512x512)."""
    height, width = x01.shape[-2:]
    m = cfg.scale * cfg.window_size
    x = F.pad(x01, (0, -width % m, 0, -height % m), mode=pad_mode)
    mean = torch.tensor(DIFFACE_MEAN).view(1, 3, 1, 1).to(x.dtype)  # float32 torch.Tensor, then type_as
    x = F.pixel_unshuffle(x - mean, cfg.scale)
    x = _conv(x, sd, "conv_first.1")
    b, c, h, w = x.shape
    tokens = _layer_norm(x.flatten(2).transpose(1, 2), sd, "patch_embed.norm")
    for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
        residual = tokens
        for j in range(depth):
            shift = cfg.window_size // 2 if j % 2 else 0
            tokens = reference_block(tokens, sd, f"layers.{i}.residual_group.blocks.{j}.", h, w, heads, cfg.window_size, shift)
        image = tokens.transpose(1, 2).view(b, c, h, w)
        tokens = _conv(image, sd, f"layers.{i}.conv").flatten(2).transpose(1, 2) + residual
    features = _layer_norm(tokens, sd, "norm").transpose(1, 2).view(b, c, h, w)
    x = _conv(features, sd, "conv_after_body") + x
    x = F.leaky_relu(_conv(x, sd, "conv_before_upsample.0"), 0.01)
    for k in range(int(math.log2(cfg.scale))):
        x = F.leaky_relu(_conv(F.interpolate(x, scale_factor=2, mode="nearest"), sd, f"conv_up{k + 1}"), 0.2)
    x = _conv(F.leaky_relu(_conv(x, sd, "conv_hr"), 0.2), sd, "conv_last") + mean
    return x[..., :height, :width]


# ----------------------------------------------------------------- numerical checks
@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_equals_naive_softmax(shifted):
    torch.manual_seed(0)
    attn = randomize(WindowAttention(dim=12, window_size=4, num_heads=3)).double()
    grid, ws = 8, 4
    tokens = torch.randn(2, grid, grid, 12, dtype=torch.float64)
    mask = reference_shift_mask(grid, grid, ws, 2).double() if shifted else None
    windows = reference_window_partition(tokens, ws).view(-1, ws * ws, 12)  # (B*nW, N, C)
    expected = naive_window_attention(windows, attn.state_dict(), "", 3, ws, mask)
    ours = attn(windows.view(2, -1, ws * ws, 12), mask)  # (B, nW, N, C)
    torch.testing.assert_close(ours.reshape(expected.shape), expected, rtol=1e-10, atol=1e-10)
    if shifted:  # the mask really cuts attention across regions
        assert (mask == -100).any() and not torch.allclose(ours, attn(windows.view(2, -1, ws * ws, 12), None))


@pytest.mark.parametrize("size", [(32, 32), (17, 30), (40, 21), (64, 48)])
def test_forward_equals_official_reference(size):
    """[-1, 1] interface around the official [0, 1] network; odd sizes are padded and cropped back.
    32x32 uses the stored 8x8-grid masks, the others masks built for their own grid."""
    cfg = tiny_config()
    model = randomize(SwinIR(cfg), seed=1).double()
    x01 = torch.rand(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x01 * 2 - 1)
    assert ours.shape == x01.shape
    expected = reference_swinir(x01, model.state_dict(), cfg) * 2 - 1
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)


def test_tiny_inputs_fall_back_to_replicate_padding():
    cfg = tiny_config()
    model = randomize(SwinIR(cfg), seed=3).double()
    x01 = torch.rand(1, 3, 5, 9, dtype=torch.float64)  # padded to 16x16: too far to reflect
    with torch.no_grad():
        ours = model(x01 * 2 - 1)
    expected = reference_swinir(x01, model.state_dict(), cfg, pad_mode="replicate") * 2 - 1
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_scale_sets_unshuffle_and_upsampling(scale):
    model = SwinIR(tiny_config(scale=scale, window_size=2, img_size=4, num_heads=[2, 2])).eval()
    ups = sorted(k for k in model.state_dict() if k.startswith("conv_up") and k.endswith("weight"))
    assert ups == [f"conv_up{i + 1}.weight" for i in range(int(math.log2(scale)))]
    assert model.state_dict()["conv_first.1.weight"].shape[1] == 3 * scale**2
    with torch.no_grad():
        out = model(torch.rand(1, 3, 19, 27) * 2 - 1)
    assert out.shape == (1, 3, 19, 27) and torch.isfinite(out).all()


def test_input_residual_starts_at_the_input_and_adds_the_network():
    """f(y) = y + 2·net at [0, 1] scale; conv_last zero-initialised, so an untrained model is the identity."""
    cfg = tiny_config(input_residual=True)
    model = SwinIR(cfg).eval()
    plain = SwinIR(tiny_config())
    assert model.state_dict().keys() == plain.state_dict().keys()  # same checkpoint layout
    x = torch.rand(1, 3, 21, 30) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), x)
        randomize(model, seed=5)
        plain.load_state_dict(model.state_dict())
        plain.eval()
        # the plain model returns (r + mean)·2 - 1 with r the same network output: residual = plain - that offset
        residual = (plain(x) + 1) / 2 - plain.image_mean
        torch.testing.assert_close(model(x), x + 2 * residual, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        SwinIR(tiny_config(input_residual=True, out_channels=1, image_mean=[0.5]))


def test_bf16_autocast_and_training_step():
    model = randomize(SwinIR(tiny_config()), seed=4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    torch.testing.assert_close(low.float(), reference, rtol=0.1, atol=0.1)
    model.train()  # stochastic depth on (drop_path_rate 0.1)
    model(x).square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        SwinIR(tiny_config())(torch.zeros(1, 1, 16, 16))


# ----------------------------------------------------------------- checkpoint files
def official_wrapping(state: dict, kind: str):
    if kind == "difface":  # DifFace trainer.save_ckpt, DDP model
        return {"iters_start": 300000, "log_step": {"train": 3000, "val": 30},
                "log_step_img": {"train": 150, "val": 30},
                "state_dict": OrderedDict((f"module.{k}", v) for k, v in state.items())}
    if kind == "difface_single_gpu":
        return {"iters_start": 10, "log_step": {"train": 1, "val": 1}, "log_step_img": {"train": 1, "val": 1},
                "state_dict": OrderedDict(state)}
    if kind == "params_ema":  # BasicSR release
        return {"params_ema": OrderedDict(state)}
    if kind == "plain":
        return OrderedDict(state)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["difface", "difface_single_gpu", "params_ema", "plain"])
def test_round_trip_through_checkpoint_file(kind, tmp_path):
    cfg = tiny_config()
    model = randomize(SwinIR(cfg), seed=5)
    path = tmp_path / "swinir.pth"
    torch.save(official_wrapping(model.state_dict(), kind), path)
    assert sorted(read_swinir_state_dict(path)) == sorted(model.state_dict())
    loaded = SwinIR.from_pretrained(path, cfg)
    x = torch.rand(1, 3, 24, 40) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_default_file_comes_from_the_torch_hub_cache(tmp_path, monkeypatch):
    cfg = tiny_config()
    model = randomize(SwinIR(cfg), seed=6)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(official_wrapping(model.state_dict(), "difface"), folder / SWINIR_WEIGHTS_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    loaded = load_swinir_checkpoint(None, cfg)
    assert torch.equal(loaded.conv_last.weight, model.conv_last.weight)


def test_missing_file_names_file_folder_and_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as err:
        load_swinir_checkpoint()
    message = str(err.value)
    assert SWINIR_WEIGHTS_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
    assert SWINIR_DIFFACE_URL == "https://github.com/zsyOAOA/DifFace/releases/download/V1.0/swinir_restoration512_L1.pth"
    assert SWINIR_DIFFACE_URL in message and "TORCH_HOME" in message
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_swinir_checkpoint(tmp_path / "nope.pth", tiny_config())


def _save_tiny(tmp_path, edit):
    state = randomize(SwinIR(tiny_config()), seed=7).state_dict()
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save({"state_dict": state}, path)
    return path


def test_strict_keys_missing(tmp_path):
    path = _save_tiny(tmp_path, lambda s: s.pop("conv_last.bias"))
    with pytest.raises(ValueError, match=r"missing keys \(1\): conv_last\.bias"):
        load_swinir_checkpoint(path, tiny_config())


def test_strict_keys_unexpected(tmp_path):
    path = _save_tiny(tmp_path, lambda s: s.update({"conv_up4.weight": torch.zeros(8, 8, 3, 3)}))
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): conv_up4\.weight"):
        load_swinir_checkpoint(path, tiny_config())


def test_strict_shapes(tmp_path):
    path = _save_tiny(tmp_path, lambda s: None)
    with pytest.raises(ValueError, match=r"shape mismatches .*layers\.0\.residual_group\.blocks\.1\.attn_mask"):
        load_swinir_checkpoint(path, tiny_config(img_size=12))  # masks stored for another grid


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"iters_start": 3, "weights": [torch.zeros(1)]}, path)
    with pytest.raises(ValueError, match="no state dict found"):
        read_swinir_state_dict(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(TypeError, match="not a state dict"):
        read_swinir_state_dict(path)
