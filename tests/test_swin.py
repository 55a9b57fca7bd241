"""Swin Transformer against timm, any input size, window attention from its definition, weights resizing."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo
from conftest import max_diff, randomize_
from zoo.layers import capture_attention, resize_relative_position_bias_table
from zoo.layers.window_attention import WindowAttention, window_geometry, window_partition, window_reverse
from zoo.models.swin import SwinTransformer
from zoo.models.swin_checkpoints import checkpoint_filter_fn

SWIN_VARIANTS = zoo.list_models(family="swin")
SMALL = dict(depths=(2, 2, 2, 2))  # every stage keeps a plain and a shifted block
TOL = 1e-4


def pair(name, **overrides):
    """(timm model, zoo model) of the same architecture with the same random weights, in eval mode."""
    ours = randomize_(zoo.create(name, **overrides)).eval()
    ref = timm.create_model(name, pretrained=False, **overrides).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)  # zoo -> timm
    fresh = zoo.create(name, **overrides).eval()
    fresh.load_state_dict(ref.state_dict(), strict=True)  # timm -> zoo
    return ref, fresh


# ------------------------------------------------------------------------------------ timm parity
@pytest.mark.parametrize("name", SWIN_VARIANTS)
def test_parity_with_timm(name):
    ref, ours = pair(name, depths=(1, 1, 2, 1) if "large" in name else (2, 2, 2, 2))
    assert set(ref.state_dict()) == set(ours.state_dict())
    x = torch.randn(1, 3, *ours.patch_embed.img_size)
    with torch.no_grad():
        out = ours(x)
        assert out.std() > 1e-2  # the comparison is not between two near-zero tensors
        assert max_diff(out, ref(x)) < TOL
        assert max_diff(ours.forward_features(x), ref.forward_features(x)) < TOL
        final, maps = ours.forward_intermediates(x, norm=True)
        ref_final, ref_maps = ref.forward_intermediates(x, norm=True)
    assert max_diff(final, ref_final) < TOL
    assert all(max_diff(m, r) < TOL for m, r in zip(maps, ref_maps))


@pytest.mark.parametrize("name", SWIN_VARIANTS)
def test_full_size_parameter_count_matches_timm_and_registry(name):
    with torch.device("meta"):
        ours, ref = zoo.create(name), timm.create_model(name)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in ref.parameters()) == zoo.model_info(name).params
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def test_registry_aliases_tags_and_input_config():
    assert [zoo.model_info(a).name for a in ("swin_t", "swin_s", "swin_b", "swin_l")] == [
        "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
        "swin_large_patch4_window7_224"]
    tiny = zoo.model_info("swin_t")
    assert tiny.default_tag == "ms_in1k" and tiny.weights["ms_in1k"].top1 == 81.2
    assert tiny.weights["ms_in22k"].num_classes == 21841
    big = zoo.model_info("swin_large_patch4_window12_384")
    assert big.default_tag == "ms_in22k_ft_in1k" and big.input.img_size == (384, 384) and big.input.crop_pct == 1.0
    model = zoo.create("swin_t.ms_in22k", depths=(1, 1, 1, 1))
    assert model.head.fc.out_features == 21841


def test_options_match_timm():
    # (224, 112): the last stage map, 7x4, is narrower than the window: timm and zoo shrink it to 7x4
    for overrides in (dict(global_pool=""), dict(num_classes=0), dict(global_pool="max"), dict(img_size=(224, 112))):
        ref, ours = pair("swin_tiny_patch4_window7_224", depths=(1, 1, 2, 1), **overrides)
        size = ours.patch_embed.img_size
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert max_diff(ours(x), ref(x)) < TOL, overrides


# ------------------------------------------------------------------------------------ any size
@pytest.mark.parametrize("crop", [True, False])
@pytest.mark.parametrize("size", [(224, 224), (256, 320), (200, 300), (97, 129)])
def test_any_input_size_runs_with_documented_stage_shapes(size, crop):
    """Stage 1 is floor(H / 4) (a partial patch ignored, as timm) or ceil(H / 4) (the image padded, as
    transformers); each later stage halves it, rounding up (odd maps are padded before merging)."""
    model = randomize_(zoo.create("swin_t", depths=(1, 1, 2, 1), num_classes=10, dynamic_img_crop=crop)).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        logits = model(x)
        final, maps = model.forward_intermediates(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    h, w = ((H // 4, W // 4) if crop else (math.ceil(H / 4), math.ceil(W / 4)) for H, W in [size]).__next__()
    expected = [(2, 96 * 2**i, math.ceil(h / 2**i), math.ceil(w / 2**i)) for i in range(4)]
    assert [tuple(m.shape) for m in maps] == expected
    assert all(torch.isfinite(m).all() for m in maps)
    assert final.shape == (2, *expected[-1][2:], 768)


def test_multiple_of_the_window_matches_timm_built_for_that_size():
    # zoo built at 224 runs 224x448 through its any-size path (layouts and masks built on the fly);
    # timm is built for 224x448 and takes its fixed path. Every stage map is a multiple of 7.
    ours = randomize_(zoo.create("swin_t", **SMALL)).eval()
    ref = timm.create_model("swin_tiny_patch4_window7_224", img_size=(224, 448), **SMALL).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 448)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < TOL


def test_stage_maps_at_224_and_options():
    model = randomize_(zoo.create("swin_t", depths=(1, 1, 2, 1))).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert [tuple(m.shape) for m in maps] == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]
        assert max_diff(final, model.forward_features(x)) < 1e-6
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert max_diff(last_two[0], maps[2]) < 1e-6 and len(last_two) == 2
        early, picked = model.forward_intermediates(x, indices=[0, -3], stop_early=True, output_fmt="NHWC")
        assert [tuple(m.shape) for m in picked] == [(1, 56, 56, 96), (1, 28, 28, 192)]
        assert early.shape == (1, 28, 28, 192)  # stopped after stage 2: its output, as in timm
    with pytest.raises(ValueError, match="4 stages"):
        model.forward_intermediates(x, indices=5)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[4])


# ------------------------------------------------------------------- window attention, by definition
def _reference_window_attention(attn: WindowAttention, x, window, shift):
    """Swin's window attention on one (1, H, W, C) map, written out token by token.

    The map is padded right/bottom to a multiple of the window (per axis: unless the map is not larger
    than the window, which then becomes the map, unshifted), rolled by -shift; a token attends to the
    real tokens of its window that lie in its shift region; the bias is the table entry of their offset.
    """
    _, H, W, C = x.shape
    heads, hd = attn.num_heads, C // attn.num_heads
    (mh, mw), (sh, sw) = [[n if n <= m else m for n, m in zip((H, W), window)],
                          [0 if n <= m else s for n, m, s in zip((H, W), window, shift)]]
    Hp, Wp = math.ceil(H / mh) * mh, math.ceil(W / mw) * mw
    th, tw = attn.window_size

    def region(r, n, m, s):
        return 0 if not s or r < n - m else (1 if r < n - s else 2)

    place = {}  # token -> (window id, region id, rolled row, rolled col)
    for i in range(H):
        for j in range(W):
            r, c = (i - sh) % Hp, (j - sw) % Wp
            place[i * W + j] = ((r // mh, c // mw), (region(r, Hp, mh, sh), region(c, Wp, mw, sw)), r, c)
    qkv = F.linear(x.reshape(H * W, C), attn.qkv.weight, attn.qkv.bias).view(H * W, 3, heads, hd)
    out = torch.zeros(H * W, heads, hd)
    for t, (win, reg, r, c) in place.items():
        keys = [u for u, (win2, reg2, _, _) in place.items() if win2 == win and reg2 == reg]
        bias = torch.stack([attn.relative_position_bias_table[(r - place[u][2] + th - 1) * (2 * tw - 1)
                                                              + (c - place[u][3] + tw - 1)] for u in keys])
        logits = (qkv[keys, 1] * qkv[t, 0]).sum(-1) * hd**-0.5 + bias  # (keys, heads)
        out[t] = (logits.softmax(0)[:, :, None] * qkv[keys, 2]).sum(0)
    return F.linear(out.reshape(1, H, W, C), attn.proj.weight, attn.proj.bias)


@pytest.mark.parametrize("size, window, shift", [
    ((8, 12), (4, 4), (2, 2)),  # multiples of the window: no padding
    ((10, 13), (4, 4), (2, 2)),  # padded and shifted
    ((10, 13), (4, 4), (0, 0)),  # padded
    ((3, 9), (4, 4), (2, 2)),  # shorter than the window on one axis
    ((5, 6), (7, 7), (3, 3)),  # smaller than the window: one window, the table's centre
    ((9, 7), (4, 3), (2, 1)),  # rectangular window
])
def test_window_attention_matches_its_definition(size, window, shift):
    """The masked rule: each real token attends to the real tokens of its (shifted) window only."""
    attn = randomize_(WindowAttention(16, num_heads=2, window_size=window)).eval()
    x = torch.randn(1, *size, 16)
    geometry = window_geometry(size, window, shift, x.device, "masked")
    with torch.no_grad():
        out = window_reverse(attn(window_partition(x, geometry), geometry), geometry)
        assert max_diff(out, _reference_window_attention(attn, x, window, shift)) < 1e-5
        with capture_attention(attn) as maps:  # the explicit path agrees and records per-window weights
            assert max_diff(window_reverse(attn(window_partition(x, geometry), geometry), geometry), out) < 1e-5
    N = geometry.window_area
    assert maps[0].shape == (1, geometry.num_windows, 2, N, N)
    assert torch.allclose(maps[0].sum(-1), torch.ones(()), atol=1e-5)


def test_padded_tokens_get_no_attention_with_the_masked_rule():
    geometry = window_geometry((10, 13), (4, 4), (2, 2), torch.device("cpu"), "masked")
    attn = randomize_(WindowAttention(16, num_heads=2, window_size=4)).eval()
    x = torch.randn(1, 10, 13, 16)
    with torch.no_grad(), capture_attention(attn) as maps:
        attn(window_partition(x, geometry), geometry)
    real = torch.zeros(geometry.num_windows * geometry.window_area, dtype=torch.bool)
    real[geometry.scatter] = True
    real = real.view(1, -1, 1, 1, geometry.window_area)  # (1, nW, 1, 1, N), per key
    weights = maps[0]  # (1, nW, heads, N, N)
    assert weights.masked_select(~real.expand_as(weights)).abs().max() == 0  # exactly zero on padding
    assert geometry.padded_size == (12, 16) and geometry.num_windows == 12


def test_layouts_and_biases_are_built_once_per_size():
    model = randomize_(zoo.create("swin_t", depths=(1, 1, 2, 1))).eval()
    x = torch.randn(1, 3, 200, 300)
    with torch.inference_mode():  # built under inference mode, used below with autograd
        model(x)
        built = window_geometry.cache_info().misses
        biases = [len(m._bias_cache) for m in model.modules() if isinstance(m, WindowAttention)]
        model(x)
    assert window_geometry.cache_info().misses == built
    assert [len(m._bias_cache) for m in model.modules() if isinstance(m, WindowAttention)] == biases
    model(x).sum().backward()  # cached tensors are ordinary tensors
    with torch.no_grad():
        model(torch.randn(1, 3, 96, 96))
    assert window_geometry.cache_info().misses > built


@pytest.mark.kernels
@pytest.mark.filterwarnings("ignore::zoo.layers.fast_paths.SlowPrecisionWarning")
def test_cached_biases_follow_weight_changes():
    model = randomize_(zoo.create("swin_t", depths=(1, 1, 2, 1), num_classes=5)).eval()
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        before = model(x)
        other = randomize_(zoo.create("swin_t", depths=(1, 1, 2, 1), num_classes=5), seed=1).eval()
        model.load_state_dict(other.state_dict())
        assert max_diff(model(x), other(x)) < 1e-6  # no stale bias from before the load
        model.layers[0].blocks[0].attn.relative_position_bias_table.mul_(-20.0)  # in-place edit
        changed = model(x)
    assert max_diff(changed, other(x)) > 1e-4 and max_diff(before, changed) > 1e-4
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert max_diff(model(x), changed) < 0.1 * changed.abs().max()


# --------------------------------------------------------------------------- training utilities
def test_grad_checkpointing_gives_the_same_gradients():
    model = randomize_(zoo.create("swin_t", depths=(1, 1, 2, 1), drop_path_rate=0.0))
    x = torch.randn(2, 3, 64, 96)
    model(x).square().sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    assert all(max_diff(a, p.grad) < 1e-5 for a, p in zip(plain, model.parameters()))


def test_layer_decay_groups_with_timm_optimizer_helper():
    from timm.optim import param_groups_layer_decay

    model = zoo.create("swin_t", depths=(2, 2, 2, 2), num_classes=5)
    no_decay = model.no_weight_decay()
    assert len(no_decay) == 8 and all(n.endswith("relative_position_bias_table") for n in no_decay)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5, no_weight_decay_list=no_decay)
    scale = {}
    for g in groups:
        for p in g["params"]:
            scale[id(p)] = (g["lr_scale"], g["weight_decay"])
    named = dict(model.named_parameters())
    assert len(scale) == len(named)
    # layers: stem 0, the 8 blocks 1..8 (a stage's patch merging with its first block), head 9
    assert scale[id(named["patch_embed.proj.weight"])] == (0.5**9, 0.05)
    assert scale[id(named["layers.0.blocks.0.attn.qkv.weight"])] == (0.5**8, 0.05)
    assert scale[id(named["layers.0.blocks.0.attn.relative_position_bias_table"])] == (0.5**8, 0.0)
    assert scale[id(named["layers.1.downsample.reduction.weight"])] == (0.5**6, 0.05)
    assert scale[id(named["layers.1.blocks.0.mlp.fc1.weight"])] == (0.5**6, 0.05)
    assert scale[id(named["layers.3.blocks.1.norm2.weight"])] == (0.5, 0.0)
    assert scale[id(named["norm.weight"])][0] == 0.5
    assert scale[id(named["head.fc.weight"])] == (1.0, 0.05)
    coarse = model.group_matcher(coarse=True)
    assert coarse["blocks"] == r"^layers\.(\d+)"


def test_training_step_drop_path_and_reset_classifier():
    model = randomize_(zoo.create("swin_t", depths=(1, 1, 2, 1), drop_path_rate=0.2, num_classes=3))
    x = torch.randn(2, 3, 64, 64)
    model.train()
    loss = F.cross_entropy(model(x), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.layers[3].blocks[0].drop_path1.drop_prob == pytest.approx(0.2)  # the last block
    model.reset_classifier(0)
    assert model.eval()(x).shape == (2, 768)
    model.reset_classifier(7, global_pool="max")
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7


@pytest.mark.parametrize("shape, message", [
    ((2, 1, 64, 64), "expected 3 input channels, got 1"),
    ((3, 64, 64), "expected a batch of images shaped \\(B, C, H, W\\)"),
])
def test_rejects_wrong_input_with_expected_vs_given(shape, message):
    model = zoo.create("swin_t", depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one positive entry per stage"):
        SwinTransformer(depths=(2, 2), num_heads=(3, 6, 12))
    with pytest.raises(ValueError, match="global_pool"):
        SwinTransformer(depths=(1,), num_heads=(3,), global_pool="token")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        SwinTransformer(embed_dim=100, depths=(1,), num_heads=(3,))


# ---------------------------------------------------------------------------- weights, other windows
def test_window7_weights_load_into_a_window12_model():
    small = randomize_(zoo.create("swin_base_patch4_window7_224", depths=(1, 1, 2, 1)))
    big = zoo.create("swin_base_patch4_window12_384", depths=(1, 1, 2, 1)).eval()
    state, notes = checkpoint_filter_fn(small.state_dict(), big)
    big.load_state_dict(state, strict=True)
    assert notes == ["resized 5 relative-position bias tables (geometric) for window 12x12: 169 -> 529 rows"]
    old = small.layers[2].blocks[1].attn.relative_position_bias_table.detach()  # (13*13, 16)
    expected = timm.layers.resize_rel_pos_bias_table(old, (12, 12), (23 * 23, 16))  # timm's own filter uses it
    assert max_diff(big.layers[2].blocks[1].attn.relative_position_bias_table, expected) < 1e-5
    original = zoo.create("swin_base_patch4_window12_384", depths=(1, 1, 2, 1), bias_table_resample="bicubic")
    state, notes = checkpoint_filter_fn(small.state_dict(), original)
    # the Swin repository's load_pretrained: F.interpolate(size=(2M-1, 2M-1), mode="bicubic"), no antialias
    expected = F.interpolate(old.T.reshape(1, 16, 13, 13), size=(23, 23), mode="bicubic").reshape(16, 23 * 23).T
    assert max_diff(state["layers.2.blocks.1.attn.relative_position_bias_table"], expected) < 1e-6
    assert max_diff(big.layers[2].blocks[1].attn.qkv.weight, small.layers[2].blocks[1].attn.qkv.weight) == 0
    with torch.no_grad():
        out = big(torch.randn(1, 3, 384, 384))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_checkpoint_filter_reads_the_original_release_and_drops_buffers():
    model = randomize_(zoo.create("swin_t", depths=(1, 1, 2, 1)))
    original = {}  # the Microsoft layout: merging at the end of stages 1-3, head.*, saved buffers
    for k, v in model.state_dict().items():
        m = __import__("re").match(r"layers\.(\d+)\.downsample\.(.*)", k)
        k = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else k.replace("head.fc.", "head.")
        original[k] = v
    original["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    original["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    fresh = zoo.create("swin_t", depths=(1, 1, 2, 1))
    state, notes = checkpoint_filter_fn(original, fresh)  # zoo.weights.unwrap takes it out of {"model": ...}
    fresh.load_state_dict(state, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert notes == ["dropped 2 buffers that the model computes itself (relative_position_index, attn_mask)",
                     "renamed the original Swin release's layout to timm's (patch merging, head)"]
    timm_format = model.state_dict()
    state, notes = checkpoint_filter_fn(timm_format, fresh)
    assert state.keys() == timm_format.keys() and notes == []


def test_resize_relative_position_bias_table_checks_its_input():
    table = torch.randn(13 * 13, 4)
    assert resize_relative_position_bias_table(table, 7) is table
    assert resize_relative_position_bias_table(table, (5, 9)).shape == (9 * 17, 4)
    with pytest.raises(ValueError, match="old_window"):
        resize_relative_position_bias_table(torch.randn(12, 4), 7)
    with pytest.raises(ValueError, match="window \\(3, 3\\) has 25 rows"):
        resize_relative_position_bias_table(table, 7, old_window=3)


# ------------------------------------------------------------------------------------ low precision
@pytest.mark.kernels
@pytest.mark.filterwarnings("ignore::zoo.layers.fast_paths.SlowPrecisionWarning")
@pytest.mark.parametrize("mode", ["on", "off"])  # the explicit bf16 window attention, and SDPA
def test_bf16_autocast_close_to_fp32(cpu_isa, sdpa_calls, mode):
    cpu_isa(mode=mode)
    model = randomize_(zoo.create("swin_t", depths=(1, 1, 2, 1))).eval()
    x = torch.randn(2, 3, 112, 144)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16
    assert max_diff(low, full) < 0.05 * full.abs().max()
    blocks = 1 + 1 + 2 + 1
    assert sdpa_calls == [torch.float32] * blocks + ([] if mode == "on" else [torch.bfloat16] * blocks)
