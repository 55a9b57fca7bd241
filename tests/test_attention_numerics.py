"""zoo's explicit and chunked low-precision attention keep the numerics of the kernel they replace
(`F.scaled_dot_product_attention`): finite wherever it is finite, and no further from the float64
truth than it is, with large-norm tokens whose scaled logits reach ~8e4 (fp16's range ends at 65504),
in fp16 and bf16, global and windowed, at inference (chunked) and with gradients (explicit)."""
import pytest
import torch
import torch.nn.functional as F

from zoo.layers import WindowAttention, capture_attention, window_geometry, window_partition
from zoo.layers.attention import Attention, _chunked_attention_fp32_softmax, explicit_attention

pytestmark = pytest.mark.filterwarnings("ignore::zoo.SlowPrecisionWarning")
DTYPES = (torch.float16, torch.bfloat16)


def large_qkv(seed=0, b=2, heads=2, n=40, hd=32, scale_to=8e4):
    """q, k, v (float64) whose scaled logits q.k / sqrt(hd) reach about `scale_to` in magnitude."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, heads, n, hd, generator=g, dtype=torch.float64) for _ in range(3))
    logits = (q @ k.transpose(-2, -1)) * hd**-0.5
    grow = (scale_to / logits.abs().max()).sqrt()
    return q * grow, k * grow, v


def errors(dtype, fn, mask=None):
    """(zoo's error, SDPA's error) against float64, both on the inputs rounded to `dtype`."""
    q, k, v = large_qkv()
    q, k, v = (t.to(dtype) for t in (q, k, v))
    scale = q.shape[-1] ** -0.5
    truth = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                           attn_mask=None if mask is None else mask.double())
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(dtype))
    ours = fn(q, k, v, mask, scale)
    assert torch.isfinite(sdpa).all()
    assert torch.isfinite(ours).all(), f"{int((~torch.isfinite(ours)).sum())} of {ours.numel()} not finite"
    return (ours.double() - truth).abs().max().item(), (sdpa.double() - truth).abs().max().item()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", ["chunked", "explicit"])
@pytest.mark.parametrize("masked", [False, True])
def test_large_logits_stay_finite_and_as_close_as_sdpa(dtype, path, masked):
    fn = _chunked_attention_fp32_softmax if path == "chunked" else explicit_attention
    mask = torch.zeros(40, 40).masked_fill(torch.rand(40, 40, generator=torch.Generator().manual_seed(1)) < 0.3,
                                           -100.0) if masked else None
    ours, sdpa = errors(dtype, lambda q, k, v, m, scale: fn(q, k, v, m, 0.0, scale) if path == "chunked" else
                        fn(q, k, v, m, scale=scale), mask)
    assert ours <= 2 * sdpa + 0.02, (ours, sdpa)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_global_attention_layer_on_large_norm_tokens(dtype, cpu_isa):
    """The issue's case: one Attention layer whose scaled logits reach ~8e4, fast path forced on."""
    torch.manual_seed(0)
    layer = Attention(64, num_heads=2, qkv_bias=True).eval()
    x = torch.randn(2, 40, 64) * 300
    with torch.no_grad():
        q, k, _ = layer.qkv(x).view(2, 40, 3, 2, 32).permute(2, 0, 3, 1, 4).unbind(0)
        peak = ((q @ k.transpose(-2, -1)) * 32**-0.5).abs().max().item()
        assert peak > 65504, peak  # scaled logits beyond fp16's range
        truth = layer.double()(x.double())
        layer = layer.to(dtype)
        cpu_isa(mode="off")
        sdpa = layer(x.to(dtype))
        cpu_isa(mode="on")  # the explicit / chunked path
        ours = layer(x.to(dtype))
        with capture_attention(layer) as maps:
            captured = layer(x.to(dtype))
    assert torch.isfinite(sdpa).all() and torch.isfinite(ours).all() and torch.isfinite(captured).all()
    assert torch.isfinite(maps[0]).all()
    err_ours, err_sdpa = ((t.double() - truth).abs().max().item() for t in (ours, sdpa))
    # the layer's own rounding (qkv, proj in low precision) dominates both; the attention adds nothing
    assert err_ours <= 1.05 * err_sdpa + 1e-3 * truth.abs().max().item(), (err_ours, err_sdpa)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_window_attention_on_large_norm_tokens(dtype, cpu_isa):
    """Swin's windowed attention (shift mask, padding), fast path forced on, with gradients too."""
    torch.manual_seed(0)
    layer = WindowAttention(64, 2, window_size=4).eval()
    x = torch.randn(2, 10, 9, 64) * 60
    geometry = window_geometry((10, 9), (4, 4), (2, 2), x.device)
    windows = window_partition(x, geometry)
    with torch.no_grad():
        truth = layer.double()(windows.double(), geometry)
        layer = layer.to(dtype)
        cpu_isa(mode="off")
        sdpa = layer(windows.to(dtype), geometry)
        cpu_isa(mode="on")
        ours = layer(windows.to(dtype), geometry)
    trained = layer(windows.to(dtype).requires_grad_(), geometry)  # the explicit path (gradients flow)
    trained.float().sum().backward()
    for out in (sdpa, ours, trained):
        assert torch.isfinite(out).all()
    err_ours, err_sdpa = ((t.double() - truth).abs().max().item() for t in (ours, sdpa))
    # the layer's own rounding (qkv, proj in low precision) dominates both; the attention adds nothing
    assert err_ours <= 1.05 * err_sdpa + 1e-3 * truth.abs().max().item(), (err_ours, err_sdpa)
