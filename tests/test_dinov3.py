"""DINOv3 (Simeoni et al. 2025) from zoo's shared blocks, against timm's `Eva` DINOv3 models and
transformers' `DINOv3ViTModel` with random weights: strict loading both ways, outputs, features and
intermediate layers at 224x224, 320x480 and a size that is not a multiple of the patch (timm pads it,
transformers crops it); the RoPE layer against transformers' own; the release converter; the registry."""
import re

import pytest
import timm
import torch

import zoo
from zoo.cli import main
from zoo.layers import RotaryEmbedding2d, apply_rope

from conftest import max_diff, randomize_

SIZES = [(224, 224), (320, 480), (230, 250)]


def timm_pair(name, **arch):
    """timm's model (random weights, class-token pooling as the original) and zoo's with its weights."""
    ref = randomize_(timm.create_model(name, global_pool="token", dynamic_img_pad=True, **arch)).eval()
    ours = zoo.create(name, **arch).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


# Every variant at reduced depth on a small input, H+ and 7B also at a reduced width with their own
# head width, MLP ratio, SwiGLU and rounding; the full parameter counts and key shapes are compared on
# the meta device below.
SMALLER = {"small": dict(depth=2), "small_plus": dict(depth=2), "base": dict(depth=1), "large": dict(depth=1),
           "huge_plus": dict(depth=1, embed_dim=256, num_heads=4), "7b": dict(depth=1, embed_dim=256, num_heads=2)}


@pytest.mark.parametrize("name", sorted(n for n in zoo.list_models("*dinov3*")))
def test_every_variant_matches_timm(name):
    size = re.search(r"vit_(\w+?)_patch16", name).group(1)
    ours, ref = timm_pair(name, **SMALLER[size])
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < 1e-4
        assert max_diff(ours.forward_features(x), ref.forward_features(x)) < 1e-4
    # zoo's weights load into timm strictly too: the keys are timm's
    assert set(ours.state_dict()) == set(ref.state_dict())


def test_full_size_parameter_counts_match_timm():
    for name in zoo.list_models("*dinov3*"):
        with torch.device("meta"):
            ref, ours = timm.create_model(name), zoo.create(name)
        count = sum(p.numel() for p in ours.parameters())
        assert count == sum(p.numel() for p in ref.parameters()) == zoo.model_info(name).params, name
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", "vit_small_plus_patch16_dinov3_qkvb"])
def test_outputs_features_and_intermediates_at_three_sizes(name):
    ours, ref = timm_pair(name, depth=2)
    for size in SIZES:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert max_diff(ours(x), ref(x)) < 1e-4
            assert max_diff(ours.forward_features(x), ref.forward_features(x)) < 1e-4
            for kwargs in (dict(indices=[0, 1], return_prefix_tokens=True),
                           dict(indices=1, norm=True, output_fmt="NLC")):
                (fa, got), (fb, want) = ours.forward_intermediates(x, **kwargs), ref.forward_intermediates(x, **kwargs)
                assert max_diff(fa, fb) < 1e-4 and len(got) == len(want)
                for a, b in zip(got, want):
                    for u, v in (zip(a, b) if isinstance(a, tuple) else [(a, b)]):
                        assert max_diff(u, v) < 1e-4
    # the patch grid of the padded size: ceil(230 / 16) x ceil(250 / 16)
    maps = ours.forward_intermediates(torch.randn(1, 3, 230, 250), indices=1, intermediates_only=True)
    assert maps[0].shape == (1, 384, 15, 16)


def test_average_pooling_is_timms_default():
    """The pooling trap: zoo's DINOv3 pools on the class token (the original's and transformers' pooler);
    timm defaults to the mean of the patch tokens, which global_pool='avg' gives."""
    ref = randomize_(timm.create_model("vit_small_patch16_dinov3", depth=2)).eval()
    ours = zoo.create("vit_small_patch16_dinov3", depth=2, global_pool="avg").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < 1e-5
        assert zoo.create("vit_small_patch16_dinov3", depth=2).global_pool == "token"


def hf_model(**config):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel
    cfg = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
               num_register_tokens=4, image_size=224)
    model = DINOv3ViTModel(DINOv3ViTConfig(**{**cfg, **config})).eval()
    return randomize_(model)


@pytest.mark.parametrize("config", [
    dict(),  # query and value biases: zoo's `_qkvb` layout
    dict(use_gated_mlp=True, hidden_act="silu", query_bias=False, value_bias=False),  # S+ / H+ / 7B style
    dict(key_bias=True),  # a key bias: loaded as the full fused bias
])
def test_transformers_dinov3_loads_and_matches(tmp_path, config):
    ref = hf_model(**config)
    ref.save_pretrained(tmp_path / "hf")
    ours = zoo.create(str(tmp_path / "hf")).eval()
    for size in SIZES:  # 230x250: transformers' strided convolution drops the partial patches; so does zoo here
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            out = ref(pixel_values=x, output_hidden_states=True)
            assert max_diff(ours.forward_features(x), out.last_hidden_state) < 1e-4
            assert max_diff(ours(x), out.pooler_output) < 1e-4
            layers = ours.forward_intermediates(x, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True)
        for (patches, prefix), hidden in zip(layers, out.hidden_states[1:]):
            assert max_diff(torch.cat([prefix, patches], dim=1), hidden) < 1e-4
    # and back: zoo writes a transformers folder that DINOv3ViTModel loads with the same outputs
    from transformers import DINOv3ViTModel
    zoo.save_pretrained(ours, tmp_path / "back", format="transformers")
    back = DINOv3ViTModel.from_pretrained(tmp_path / "back").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(back(pixel_values=x).last_hidden_state, ref(pixel_values=x).last_hidden_state) < 1e-4


def test_transformers_checkpoint_of_a_registered_size_is_named_and_exports_to_timm(tmp_path):
    """A DINOv3ViTModel of a registered size is named as that variant (transformers' own training-time
    RoPE rescale aside), and writes a timm folder that timm loads with the same outputs."""
    ref = hf_model(hidden_size=384, num_attention_heads=6, intermediate_size=1536, num_hidden_layers=12,
                   key_bias=False, query_bias=False, value_bias=False)
    ref.save_pretrained(tmp_path / "hf")
    ours = zoo.create(str(tmp_path / "hf")).eval()
    assert ours.zoo_config["name"] == "vit_small_patch16_dinov3" and ours.rope.rescale == 2.0
    zoo.save_pretrained(ours, tmp_path / "timm", format="timm")
    back = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert max_diff(back(x), ref(pixel_values=x).pooler_output) < 1e-4


@pytest.mark.parametrize("size, hidden, heads, layers, intermediate, name", [
    ("S+", 384, 6, 12, 1536, "vit_small_plus_patch16_dinov3"),
    ("H+", 1280, 20, 32, 5120, "vit_huge_plus_patch16_dinov3"),
    ("7B", 4096, 32, 40, 8192, "vit_7b_patch16_dinov3"),
])
def test_transformers_swiglu_sizes_are_named(size, hidden, heads, layers, intermediate, name):
    """The gated sizes, converted from a full-size DINOv3ViTModel built on the meta device (no memory)."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DINOv3ViTConfig(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers,
                             intermediate_size=intermediate, use_gated_mlp=True, hidden_act="silu",
                             num_register_tokens=4, query_bias=False, value_bias=False, key_bias=False)
    with torch.device("meta"):
        state_dict = DINOv3ViTModel(config).state_dict()
    converted, variant = zoo.factory.convert_transformers(config.to_dict(), state_dict)
    assert variant is not None and variant.name == name, size
    with torch.device("meta"):
        built = zoo.create(name, **{k: v for k, v in converted.args.items() if k != "img_size"})
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in converted.state_dict.items()}


def test_rope_equals_transformers_rope():
    from transformers import DINOv3ViTConfig
    from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTRopePositionEmbedding
    ref = DINOv3ViTRopePositionEmbedding(DINOv3ViTConfig(hidden_size=384, num_attention_heads=6)).eval()
    ours = RotaryEmbedding2d(64, base=100).eval()
    for h, w in [(14, 14), (20, 30), (3, 5)]:
        cos, sin = ref(torch.zeros(1, 3, 16 * h, 16 * w))
        got_sin, got_cos = ours((h, w))
        assert max_diff(got_sin, sin) < 1e-5 and max_diff(got_cos, cos) < 1e-5


def test_rope_geometry_and_augmentation():
    rope = RotaryEmbedding2d(8, base=100).eval()
    coords = rope.coords((2, 4))
    assert torch.allclose(coords[:4, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # column centres in [-1, 1]
    assert torch.allclose(coords[::4, 0], torch.tensor([-0.5, 0.5]))  # rows normalised separately
    # rotation keeps norms and leaves the prefix tokens alone
    x = torch.randn(2, 3, 1 + 8, 8)
    y = apply_rope(x, rope((2, 4)))
    assert torch.equal(y[:, :, :1], x[:, :, :1])
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    # a query and key at the same position: their product does not change
    assert torch.allclose((y[..., 1:, :] * y[..., 1:, :]).sum(-1), (x[..., 1:, :] ** 2).sum(-1), atol=1e-5)
    # training-time rescale moves coordinates by one factor on both axes; eval never does
    aug = RotaryEmbedding2d(8, rescale=2.0).train()
    moved = aug.coords((2, 4))
    ratio = moved / coords
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio)) and not torch.allclose(moved, coords)
    assert torch.equal(aug.eval().coords((2, 4)), coords)
    with pytest.raises(ValueError, match="divisible by 4"):
        RotaryEmbedding2d(6)
    with pytest.raises(ValueError, match="factor >= 1"):
        RotaryEmbedding2d(8, jitter=0.5)


def test_bf16_and_materialised_models_keep_float32_rope_periods():
    model = randomize_(zoo.create("vit_small_patch16_dinov3", depth=2)).eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        expected = model(x)
        low = model.to(torch.bfloat16)
        assert low.rope.periods.dtype == torch.float32 and torch.equal(low.rope.periods, RotaryEmbedding2d(64).periods)
        out = low(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and max_diff(out, expected) < 0.05 * expected.abs().max()
    with torch.device("meta"):  # built on meta, then given memory (how big models are loaded): periods computed
        empty = zoo.create("vit_small_patch16_dinov3", depth=1)
    assert torch.equal(empty.to_empty(device="cpu").rope.periods, RotaryEmbedding2d(64).periods)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomize_(zoo.create("vit_small_patch16_dinov3", depth=2)).train()
    x = torch.randn(2, 3, 48, 32)
    grads = []
    for on in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(on)
        model.forward_intermediates(x, indices=[0, 1])[1][0].sum().backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad.clone())
    assert max_diff(*grads) < 1e-5


def release_state_dict(timm_model):
    """timm's DINOv3 weights written in the facebookresearch/dinov3 release layout (its documented keys):
    a fused qkv bias with its key part masked, all zero for a model without biases (as the distilled
    B, L and H+ files)."""
    out = {"mask_token": torch.zeros(1, timm_model.embed_dim), "rope_embed.periods": torch.ones(16)}
    for k, v in timm_model.state_dict().items():
        if k.endswith("attn.qkv.weight") and k.replace("qkv.weight", "q_bias") not in timm_model.state_dict():
            out[k.replace("weight", "bias")] = torch.zeros(v.shape[0])
            out[k.replace("weight", "bias_mask")] = torch.ones(v.shape[0])
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        k = k.replace("mlp.fc1_g", "mlp.w1").replace("mlp.fc1_x", "mlp.w2").replace("mlp.fc2", "mlp.w3")
        if k.endswith("attn.q_bias"):
            v = torch.cat([v, torch.zeros_like(v), timm_model.state_dict()[k.replace("q_bias", "v_bias")]])
            out[k.replace("q_bias", "qkv.bias")] = v
            out[k.replace("q_bias", "qkv.bias_mask")] = torch.ones_like(v)
        elif not k.endswith("attn.v_bias"):
            out[k] = v
    return out


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3_qkvb", "vit_small_plus_patch16_dinov3"])
def test_release_checkpoint_converts(tmp_path, name):
    ref = randomize_(timm.create_model(name, global_pool="token")).eval()
    torch.save(release_state_dict(ref), tmp_path / "release.pth")
    main(["convert", "--from", "dinov3", str(tmp_path / "release.pth"), "--out", str(tmp_path / "out")])
    ours = zoo.create(str(tmp_path / "out")).eval()
    assert ours.zoo_config["name"] == name
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < 1e-4


def test_cli_lists_and_describes(capsys):
    assert main(["list", "*dinov3*"]) == 0
    listed = capsys.readouterr().out
    assert "vit_7b_patch16_dinov3" in listed and "vit_small_plus_patch16_dinov3_qkvb" in listed
    assert main(["info", "dinov3_vitb16"]) == 0
    info = capsys.readouterr().out
    assert "vit_base_patch16_dinov3" in info and "dinov3-license" in info and "85,641,216" in info


def test_timm_format_export_loads_in_timm_with_zoos_pooling_and_padding(tmp_path):
    """`format="timm"` writes what zoo's variant chose where timm's builder defaults otherwise (class-token
    pooling, padded partial patches), so timm's `local-dir:` load gives zoo's outputs."""
    ours = randomize_(zoo.create("vit_small_patch16_dinov3", depth=2)).eval()
    zoo.save_pretrained(ours, tmp_path, format="timm")
    ref = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 230, 250)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < 1e-4
