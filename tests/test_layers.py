"""The shared blocks in zoo/layers, each against an independent computation or timm's layer."""
import math

import numpy as np
import pytest
import timm.layers
import torch
import torch.nn.functional as F

from conftest import max_diff, randomize_
from zoo.layers import (
    Attention, Block, DropPath, LayerScale, Mlp, PatchEmbed, SwiGLU, capture_attention, resample_pos_embed,
    sincos_2d_pos_embed, swiglu_hidden_features,
)
from zoo.layers.attention import explicit_attention


# ------------------------------------------------------------------------------------ patch embed
def test_patch_embed_rectangular_tokens_in_row_major_order():
    pe = PatchEmbed(img_size=(32, 48), patch_size=16, in_chans=3, embed_dim=8)
    x = torch.randn(2, 3, 32, 48)
    tokens = pe(x)
    assert tokens.shape == (2, 2 * 3, 8)
    # token (row 1, col 2) is the conv output at that patch: check against a manual patch projection
    patch = x[:, :, 16:32, 32:48]
    manual = torch.einsum("bchw,dchw->bd", patch, pe.proj.weight) + pe.proj.bias
    assert max_diff(tokens[:, 1 * 3 + 2], manual) < 1e-5


def test_patch_embed_nhwc_and_dynamic_padding():
    pe = PatchEmbed(img_size=32, patch_size=16, embed_dim=8, output_fmt="NHWC", strict_img_size=False,
                    dynamic_img_pad=True)
    x = torch.randn(1, 3, 40, 20)
    out = pe(x)
    assert out.shape == (1, 3, 2, 8) and pe.feat_size((40, 20)) == (3, 2)
    padded = F.pad(x, (0, 12, 0, 8))  # zero padding to 48x32 gives the same tokens
    assert max_diff(out, pe.proj(padded).permute(0, 2, 3, 1)) < 1e-6


@pytest.mark.parametrize("shape, words", [
    ((3, 32, 32), ["(B, C, H, W)", "3-d"]),
    ((1, 1, 32, 32), ["expected 3 input channels, got 1"]),
    ((1, 3, 48, 32), ["expected input size 32x32", "got 48x32", "dynamic_img_size"]),
])
def test_patch_embed_rejects_wrong_input_with_expected_vs_given(shape, words):
    pe = PatchEmbed(img_size=32, patch_size=16, embed_dim=8)
    with pytest.raises(ValueError) as err:
        pe(torch.randn(*shape))
    for w in words:
        assert w in str(err.value)


def test_patch_embed_non_strict_needs_divisible_size():
    pe = PatchEmbed(img_size=32, patch_size=16, embed_dim=8, strict_img_size=False)
    assert pe(torch.randn(1, 3, 64, 16)).shape == (1, 4, 8)
    with pytest.raises(ValueError, match="not divisible by the patch size 16x16"):
        pe(torch.randn(1, 3, 40, 32))


# -------------------------------------------------------------------------------------- attention
def _reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Multi-head attention written out from its definition."""
    B, N, D = x.shape
    h, hd = attn.num_heads, D // attn.num_heads
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(D, dim=-1)
    q, k, v = (t.reshape(B, N, h, hd).transpose(1, 2) for t in (q, k, v))
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    out = (w @ v).transpose(1, 2).reshape(B, N, D)
    return out @ attn.proj.weight.T + attn.proj.bias


def test_attention_matches_definition_and_timm():
    attn = randomize_(Attention(64, num_heads=4, qkv_bias=True)).eval()
    x = torch.randn(2, 10, 64)
    out = attn(x)
    assert max_diff(out, _reference_attention(attn, x)) < 1e-5
    ref = timm.layers.Attention(64, num_heads=4, qkv_bias=True).eval()
    ref.load_state_dict(attn.state_dict(), strict=True)
    assert max_diff(out, ref(x)) < 1e-5


def test_attention_qk_norm_matches_timm():
    attn = randomize_(Attention(64, num_heads=4, qkv_bias=True, qk_norm=True)).eval()
    ref = timm.layers.Attention(64, num_heads=4, qkv_bias=True, qk_norm=True, norm_layer=timm.layers.LayerNorm)
    ref.load_state_dict(attn.state_dict(), strict=True)
    x = torch.randn(2, 10, 64)
    assert max_diff(attn(x), ref.eval()(x)) < 1e-5


def test_attention_query_subset_equals_full_rows():
    attn = randomize_(Attention(64, num_heads=4, qkv_bias=True)).eval()
    x = torch.randn(2, 10, 64)
    assert max_diff(attn._forward_first_rows(x, 2), attn(x)[:, :2]) < 1e-5


def test_capture_attention_records_weights_without_changing_output():
    attn = randomize_(Attention(64, num_heads=4, qkv_bias=True)).eval()
    x = torch.randn(2, 10, 64)
    fused = attn(x)
    with capture_attention(attn) as maps:
        explicit = attn(x)
    assert len(maps) == 1 and maps[0].shape == (2, 4, 10, 10)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 4, 10), atol=1e-5)
    assert max_diff(fused, explicit) < 1e-5
    assert attn.attn_sink is None  # back on the fused path
    attn(x)
    assert len(maps) == 1


@pytest.mark.kernels
@pytest.mark.filterwarnings("ignore::zoo.layers.fast_paths.SlowPrecisionWarning")
@pytest.mark.parametrize("mode", ["on", "off"])  # bf16 GEMMs + float32 softmax, and SDPA
def test_bf16_attention_close_to_fp32(cpu_isa, sdpa_calls, mode):
    cpu_isa(mode=mode)
    attn = randomize_(Attention(64, num_heads=4, qkv_bias=True)).eval()
    x = torch.randn(2, 50, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attn(x)
    assert low.dtype == torch.bfloat16
    assert max_diff(low, attn(x)) < 0.05
    assert sdpa_calls == ([] if mode == "on" else [torch.bfloat16]) + [torch.float32]



@pytest.mark.parametrize("mask_kind", ["none", "broadcast", "per_sample", "bool"])
@pytest.mark.parametrize("chunk_bytes", [2 * 3 * 4 * 17 * 17 * 4, 1000])  # 2 samples; 3 queries of 1 sample
def test_low_precision_cpu_attention_in_chunks_equals_one_pass(monkeypatch, cpu_isa, mask_kind, chunk_bytes):
    """bf16 inference on the fast path takes the chunked float32-softmax path (forced on here: it runs
    on any CPU); chunk edges must not change the result beyond float32 summation order."""
    import zoo.layers.attention as attention_module
    cpu_isa(mode="on")
    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 3, 4, 17, 8).bfloat16() for _ in range(3))  # (B, windows, heads, N, hd)
    mask = {"none": None, "broadcast": torch.randn(3, 4, 17, 17).bfloat16(),
            "per_sample": torch.randn(5, 3, 4, 17, 17).bfloat16(),
            "bool": torch.rand(5, 1, 1, 17, 17) > 0.3}[mask_kind]
    if mask is not None and mask.dtype == torch.bool:
        mask[..., 0] = True  # every query attends somewhere
    scores = q.float() @ k.float().transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    ref = scores.softmax(-1) @ v.float()
    with torch.inference_mode():
        whole = explicit_attention(q, k, v, mask, scale=1.0)
        monkeypatch.setattr(attention_module, "_CHUNK_BYTES", chunk_bytes)
        chunked = explicit_attention(q, k, v, mask, scale=1.0)
    assert whole.dtype == chunked.dtype == torch.bfloat16
    # equal up to the order of float32 sums: GEMMs of another shape may block differently (AVX2 kernels
    # do), which can move a bf16 output by one unit in the last place, never more
    assert max_diff(whole.float(), chunked.float()) <= 2**-7 * whole.float().abs().max()
    assert max_diff(whole.float(), ref) < 0.05  # bf16 rounding of outputs up to ~3

# -------------------------------------------------------------------------------- MLP and friends
def test_mlp_matches_timm():
    mlp = randomize_(Mlp(32, 128))
    ref = timm.layers.Mlp(32, 128)
    ref.load_state_dict(mlp.state_dict(), strict=True)
    x = torch.randn(3, 5, 32)
    assert max_diff(mlp(x), ref(x)) < 1e-6


def test_swiglu_width_rule_and_timm_parity():
    assert swiglu_hidden_features(4 * 1536) == 4096  # DINOv2 ViT-g/14
    mlp = SwiGLU(1536, 4 * 1536)
    assert mlp.fc1.weight.shape == (8192, 1536) and mlp.fc2.weight.shape == (1536, 4096)
    small = randomize_(SwiGLU(48, 4 * 48))
    ref = timm.layers.SwiGLUPacked(48, 2 * swiglu_hidden_features(4 * 48))
    ref.load_state_dict(small.state_dict(), strict=True)
    x = torch.randn(2, 7, 48)
    gate, value = (x @ small.fc1.weight.T + small.fc1.bias).chunk(2, dim=-1)
    manual = (F.silu(gate) * value) @ small.fc2.weight.T + small.fc2.bias
    assert max_diff(small(x), manual) < 1e-5 and max_diff(small(x), ref(x)) < 1e-5


def test_layer_scale_and_drop_path():
    ls = LayerScale(4, init_values=0.5)
    assert torch.equal(ls(torch.ones(2, 4)), torch.full((2, 4), 0.5))
    dp = DropPath(0.5)
    x = torch.ones(4000, 3)
    assert torch.equal(dp.eval()(x), x)
    out = dp.train()(x)
    kept = out[:, 0] != 0
    assert torch.all((out[kept] == 2.0)) and torch.all(out[~kept] == 0)  # whole samples, scaled 1/(1-p)
    assert abs(kept.float().mean().item() - 0.5) < 0.05
    with pytest.raises(ValueError, match="drop_path rate"):
        DropPath(1.0)


def test_block_matches_timm_with_layer_scale():
    block = randomize_(Block(64, 4, init_values=1e-5)).eval()
    ref = timm.models.vision_transformer.Block(64, 4, qkv_bias=True, init_values=1e-5).eval()
    ref.load_state_dict(block.state_dict(), strict=True)
    x = torch.randn(2, 9, 64)
    assert max_diff(block(x), ref(x)) < 1e-5
    assert max_diff(block._forward_first_rows(x, 1), ref(x)[:, :1]) < 1e-5


# --------------------------------------------------------------------------- positional embeddings
def _mae_sincos_numpy(dim, h, w):
    """The MAE reference formula, written independently in numpy (first half: x index, second: y)."""
    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.concatenate([one_axis(dim // 2, xs), one_axis(dim // 2, ys)], axis=1)


def test_sincos_table_matches_mae_formula():
    table = sincos_2d_pos_embed(64, (3, 5), num_prefix_tokens=1)
    assert table.shape == (1 + 15, 64) and table.dtype == torch.float32
    assert torch.all(table[0] == 0)
    np.testing.assert_allclose(table[1:].numpy(), _mae_sincos_numpy(64, 3, 5), atol=1e-6)
    # square grid: the MAE code's meshgrid(w, h) convention gives the same table
    grid = np.stack(np.meshgrid(np.arange(4.0), np.arange(4.0)), axis=0)  # grid[0] = column index
    omega = 1.0 / 10000 ** (np.arange(8) / 8.0)
    emb_a = np.outer(grid[0].reshape(-1), omega)
    emb_b = np.outer(grid[1].reshape(-1), omega)
    mae = np.concatenate([np.sin(emb_a), np.cos(emb_a), np.sin(emb_b), np.cos(emb_b)], axis=1)
    np.testing.assert_allclose(sincos_2d_pos_embed(32, (4, 4)).numpy(), mae, atol=1e-6)


def test_resample_pos_embed_matches_timm_and_keeps_prefix():
    pos = torch.randn(1, 2 + 4 * 6, 16)
    new = resample_pos_embed(pos, (6, 3), (4, 6), num_prefix_tokens=2)
    assert new.shape == (1, 2 + 18, 16)
    assert torch.equal(new[:, :2], pos[:, :2])
    ref = timm.layers.resample_abs_pos_embed(pos, (6, 3), (4, 6), num_prefix_tokens=2)
    assert max_diff(new, ref) < 1e-6
    assert resample_pos_embed(pos, (4, 6), (4, 6), 2) is pos
    with pytest.raises(ValueError, match="prefix rows plus a 5x5 grid"):
        resample_pos_embed(pos, (3, 3), (5, 5), 2)
