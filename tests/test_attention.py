"""Neighbourhood attention: the PyTorch fallback and NATTEN against independent references.

References: a per-query Python loop written from the window definition (each query sees the k×k
window clamped inside the map), and the library's dense masked brute force, which the loop checks.
"""

import warnings

import pytest
import torch

from latent_pmrf.models import attention
from latent_pmrf.models.attention import (
    brute_force_neighborhood_attention,
    neighborhood_attention,
)

# (B, H, W, heads, D, kernel_size): H≠W, H or W equal to k, maps that are not whole tiles, k=1.
# Head dims are powers of two >= 8, which NATTEN's CPU (flex) path requires.
SHAPES = [
    (2, 9, 11, 2, 16, 3),
    (1, 12, 7, 3, 8, 7),  # W == k
    (1, 7, 7, 1, 8, 7),  # H == W == k: every query sees the whole map
    (1, 5, 30, 2, 8, 5),  # H == k, wide
    (2, 20, 17, 2, 16, 5),  # neither side a multiple of the query tile
    (1, 33, 31, 2, 8, 13),
    (1, 16, 24, 2, 8, 1),  # k=1: each query sees only itself
    (1, 64, 64, 4, 64, 7),  # the benchmark size
]


def qkv(batch, height, width, heads, dim, dtype=torch.float32, dim_v=None, requires_grad=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    dims = (dim, dim, dim_v or dim)
    return [torch.randn(batch, height, width, heads, d, generator=gen, dtype=dtype).requires_grad_(requires_grad)
            for d in dims]


def loop_reference(q, k, v, kernel_size, scale=None):
    """Query by query: the window is centred on the nearest position whose k×k window fits in the
    map, i.e. centre = clamp(query, k//2, size - 1 - k//2); softmax over its k² keys."""
    height, width, dim = q.shape[1], q.shape[2], q.shape[-1]
    scale = dim**-0.5 if scale is None else scale
    half = kernel_size // 2
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    q, k, v = (t.double() for t in (q, k, v))
    for i in range(height):
        ci = min(max(i, half), height - 1 - half)
        for j in range(width):
            cj = min(max(j, half), width - 1 - half)
            keys = k[:, ci - half : ci + half + 1, cj - half : cj + half + 1].flatten(1, 2)  # (B, k², n, d)
            values = v[:, ci - half : ci + half + 1, cj - half : cj + half + 1].flatten(1, 2)
            weights = (torch.einsum("bnd,bknd->bnk", q[:, i, j], keys) * scale).softmax(-1)
            out[:, i, j] = torch.einsum("bnk,bknd->bnd", weights, values)
    return out


@pytest.mark.parametrize("shape", [(2, 6, 9, 2, 8, 3), (1, 10, 7, 1, 4, 5), (1, 5, 5, 2, 4, 5)])
def test_brute_force_matches_per_query_loop(shape):
    *size, kernel_size = shape
    q, k, v = qkv(*size)
    expected = loop_reference(q, k, v, kernel_size)
    torch.testing.assert_close(brute_force_neighborhood_attention(q, k, v, kernel_size).double(), expected,
                               atol=1e-5, rtol=0)


def test_window_start_is_centred_then_clamped():
    starts = attention.window_start(torch.arange(10), 10, 5).tolist()
    assert starts == [0, 0, 0, 1, 2, 3, 4, 5, 5, 5]  # every window [s, s+5) fits in 0..9


@pytest.mark.parametrize("shape", SHAPES)
def test_fallback_matches_brute_force(shape):
    *size, kernel_size = shape
    q, k, v = qkv(*size)
    out = neighborhood_attention(q, k, v, kernel_size, backend="torch")
    assert out.shape == q.shape
    torch.testing.assert_close(out, brute_force_neighborhood_attention(q, k, v, kernel_size), atol=1e-5, rtol=0)


def test_fallback_small_map_matches_per_query_loop():
    q, k, v = qkv(2, 11, 9, 2, 8)
    out = neighborhood_attention(q, k, v, 5, backend="torch")
    torch.testing.assert_close(out.double(), loop_reference(q, k, v, 5), atol=1e-5, rtol=0)


def test_custom_scale_and_value_dim():
    q, k, v = qkv(2, 10, 12, 2, 8, dim_v=12)
    out = neighborhood_attention(q, k, v, 3, scale=0.7)
    assert out.shape == (2, 10, 12, 2, 12)
    torch.testing.assert_close(out, brute_force_neighborhood_attention(q, k, v, 3, scale=0.7), atol=1e-5, rtol=0)


def test_non_contiguous_inputs():
    # As HDiT makes them: slices of one fused qkv projection, (B, H, W, 3, heads, D).
    qkv_fused = torch.randn(2, 12, 10, 3, 2, 8)
    q, k, v = qkv_fused.unbind(3)
    torch.testing.assert_close(neighborhood_attention(q, k, v, 5),
                               brute_force_neighborhood_attention(q, k, v, 5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(2, 9, 11, 2, 16, 3), (1, 12, 7, 3, 8, 7), (2, 20, 17, 2, 16, 5)])
def test_gradients_match_brute_force(shape):
    *size, kernel_size = shape
    q, k, v = qkv(*size, requires_grad=True)
    cotangent = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(neighborhood_attention(q, k, v, kernel_size, backend="torch"), (q, k, v), cotangent)
    expected = torch.autograd.grad(brute_force_neighborhood_attention(q, k, v, kernel_size), (q, k, v), cotangent)
    for name, grad, ref in zip("qkv", grads, expected):
        torch.testing.assert_close(grad, ref, atol=1e-5, rtol=0, msg=lambda m, name=name: f"d{name}: {m}")


def test_gradcheck_float64():
    q, k, v = qkv(1, 5, 6, 1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: neighborhood_attention(*t, 3, backend="torch"), (q, k, v),
                                    fast_mode=True)


@pytest.mark.parametrize("dtype, atol", [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_half_precision(dtype, atol):
    q, k, v = qkv(2, 13, 18, 2, 32)
    expected = brute_force_neighborhood_attention(q, k, v, 5)
    q16, k16, v16 = (t.to(dtype).requires_grad_() for t in (q, k, v))
    out = neighborhood_attention(q16, k16, v16, 5)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, atol=atol, rtol=0)
    out.float().square().sum().backward()
    assert all(t.grad.dtype == dtype and t.grad.isfinite().all() for t in (q16, k16, v16))


def test_autocast_bf16():
    q, k, v = qkv(1, 16, 16, 2, 32, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        out = neighborhood_attention(q, k, v, 7)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), brute_force_neighborhood_attention(q, k, v, 7), atol=3e-2, rtol=0)
    out.float().sum().backward()
    assert q.grad.dtype == torch.float32


def test_plan_cached_under_inference_mode_serves_training():
    # Lightning validates under inference_mode before training; the cached mask must not be an
    # inference tensor, which autograd could not save for backward.
    attention._tile_plan.cache_clear()
    q, k, v = qkv(1, 9, 9, 1, 8, requires_grad=True)
    with torch.inference_mode():
        neighborhood_attention(q.detach(), k.detach(), v.detach(), 3)
    neighborhood_attention(q, k, v, 3).sum().backward()
    assert q.grad is not None


@pytest.mark.parametrize("kernel_size, match", [
    (4, "must be odd"), (0, "positive int"), (2.0, "positive int"), (True, "positive int"),
    (11, "larger than the 10×12"), (13, "larger than the 10×12"),
])
def test_invalid_kernel_size(kernel_size, match):
    q, k, v = qkv(1, 10, 12, 1, 4)
    with pytest.raises(ValueError, match=match):
        neighborhood_attention(q, k, v, kernel_size)
    with pytest.raises(ValueError, match=match):
        brute_force_neighborhood_attention(q, k, v, kernel_size)


def test_invalid_inputs():
    q, k, v = qkv(1, 10, 12, 2, 4)
    with pytest.raises(ValueError, match=r"\(B, H, W, heads, D\)"):
        neighborhood_attention(q[0], k[0], v[0], 3)
    with pytest.raises(ValueError, match="same shape"):
        neighborhood_attention(q, k[:, :9], v, 3)
    with pytest.raises(ValueError, match="dtype"):
        neighborhood_attention(q, k.double(), v, 3)
    with pytest.raises(ValueError, match="backend"):
        neighborhood_attention(q, k, v, 3, backend="flash")


def test_natten_backend_without_natten_is_an_error(monkeypatch):
    monkeypatch.setattr(attention, "natten_na2d", lambda require_fused=False: None)
    q, k, v = qkv(1, 8, 8, 1, 8)
    with pytest.raises(RuntimeError, match="natten>=0.20"):
        neighborhood_attention(q, k, v, 3, backend="natten")
    torch.testing.assert_close(neighborhood_attention(q, k, v, 3), brute_force_neighborhood_attention(q, k, v, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", [(2, 20, 17, 2, 32, 5), (1, 64, 64, 4, 64, 7)])
def test_fallback_on_cuda_matches_brute_force(shape):
    *size, kernel_size = shape
    q, k, v = (t.cuda().requires_grad_() for t in qkv(*size))
    cotangent = torch.randn_like(q)
    out = neighborhood_attention(q, k, v, kernel_size, backend="torch")
    ref = brute_force_neighborhood_attention(q, k, v, kernel_size)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    for grad, ref_grad in zip(torch.autograd.grad(out, (q, k, v), cotangent),
                              torch.autograd.grad(ref, (q, k, v), cotangent)):
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=0)


@pytest.mark.skipif(attention.natten_na2d() is None, reason="natten>=0.20 not importable")
@pytest.mark.parametrize("shape", [s for s in SHAPES if s[-1] > 1])  # NATTEN rejects kernel_size 1
def test_natten_forward_on_cpu_matches_brute_force(shape):
    # On CPU NATTEN runs its forward-only, unfused flex-attention backend (head dims 8..512, 2^n).
    *size, kernel_size = shape
    q, k, v = qkv(*size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = neighborhood_attention(q, k, v, kernel_size, backend="natten")
    torch.testing.assert_close(out, brute_force_neighborhood_attention(q, k, v, kernel_size), atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or attention.natten_na2d(require_fused=True) is None,
                    reason="needs CUDA and natten>=0.20 built with its fused kernels")
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-4), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("shape", [(2, 20, 17, 2, 32, 5), (1, 64, 64, 4, 64, 7), (2, 32, 24, 4, 64, 13)])
def test_natten_matches_fallback_on_cuda(shape, dtype, atol):
    *size, kernel_size = shape
    q, k, v = (t.cuda() for t in qkv(*size, dtype=dtype))
    cotangent = torch.randn_like(q)
    results = {}
    for backend in ("natten", "torch"):
        inputs = [t.detach().requires_grad_() for t in (q, k, v)]
        out = neighborhood_attention(*inputs, kernel_size, backend=backend)
        results[backend] = dict(zip(("out", "dq", "dk", "dv"), (out, *torch.autograd.grad(out, inputs, cotangent))))
    assert torch.equal(neighborhood_attention(q, k, v, kernel_size), results["natten"]["out"])  # "auto" picks NATTEN
    for name, natten_value in results["natten"].items():
        torch.testing.assert_close(natten_value.float(), results["torch"][name].float(), atol=atol, rtol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")
