"""VisionTransformer against timm: every ViT-family registry variant, both directions, strict keys."""
import pytest
import timm
import torch

import zoo
from conftest import max_diff, randomize_
from zoo.models.vit import VisionTransformer

# DINOv3 has its own tests (tests/test_dinov3.py): timm's builders pool those by average, zoo's by class token
VIT_VARIANTS = [n for n in zoo.list_models(family="vit") if "dinov3" not in n]
TOL = 1e-4


def pair(name, **overrides):
    """(timm model, zoo model) of the same architecture with the same random weights, in eval mode.

    Numeric tests run 2 blocks (every block is the same code; 2 check that the blocks chain and that
    intermediate layers are indexed right); full sizes are checked on the meta device."""
    overrides.setdefault("depth", 2)
    ours = randomize_(zoo.create(name, **overrides)).eval()
    ref = timm.create_model(name, pretrained=False, **overrides).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)  # zoo -> timm
    fresh = zoo.create(name, **overrides).eval()
    fresh.load_state_dict(ref.state_dict(), strict=True)  # timm -> zoo
    return ref, fresh


def images(model, batch=2, size=None):
    h, w = size or model.patch_embed.img_size
    return torch.randn(batch, 3, h, w)


BIG = ("large", "huge", "giant")  # at native size in their small / base twins; here at a 9x9 grid to save time


@pytest.mark.parametrize("name", VIT_VARIANTS)
def test_parity_with_timm(name):
    ref, ours = pair(name, **({"img_size": 9 * zoo.model_info(name).args.get("patch_size", 16), "depth": 1}
                              if any(b in name for b in BIG) else {}))  # big widths: one block (their twins chain 2)
    assert set(ref.state_dict()) == set(ours.state_dict())
    x = images(ours, batch=1 if max(ours.patch_embed.img_size) >= 384 or "dinov2" in name else 2)  # big grids: 1
    with torch.no_grad():
        out, ref_out = ours(x), ref(x)
        assert out.std() > 1e-2  # the comparison is not between two near-zero tensors
        assert max_diff(out, ref_out) < TOL
        assert max_diff(ours.forward_features(x), ref.forward_features(x)) < TOL
        n = min(2, len(ours.blocks))
        mine = ours.get_intermediate_layers(x, n=n, return_class_token=True, norm=True)
        theirs = ref.get_intermediate_layers(x, n=n, return_prefix_tokens=True, norm=True)
        for (patches, cls), (ref_patches, ref_prefix) in zip(mine, theirs):
            assert max_diff(patches, ref_patches) < TOL and max_diff(cls, ref_prefix[:, 0]) < TOL


@pytest.mark.parametrize("name", VIT_VARIANTS)
def test_full_size_parameter_count_matches_timm_and_registry(name):
    with torch.device("meta"):
        ours, ref = zoo.create(name), timm.create_model(name)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in ref.parameters()) == zoo.model_info(name).params
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def test_rectangular_input():
    ref, ours = pair("deit_small_patch16_224", img_size=(160, 256), depth=3)
    x = torch.randn(2, 3, 160, 256)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < TOL
        feats = ours.get_intermediate_layers(x, n=1, reshape=True)[0]
    assert feats.shape == (2, 384, 10, 16)


@pytest.mark.parametrize("name, size, pad", [
    ("vit_base_patch16_224", (160, 288), False),
    ("vit_small_patch14_reg4_dinov2", (224, 168), False),
    ("deit_tiny_distilled_patch16_224", (200, 150), True),  # not a multiple of 16: padded
])
def test_dynamic_img_size_at_another_resolution(name, size, pad):
    ref, ours = pair(name, depth=3, dynamic_img_size=True, dynamic_img_pad=pad)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < TOL
        assert max_diff(ours.forward_features(x), ref.forward_features(x)) < TOL


@pytest.mark.parametrize("overrides", [
    dict(global_pool="avg"), dict(qk_norm=True), dict(class_token=False, global_pool="avg"),
    dict(reg_tokens=2, no_embed_class=True, init_values=0.1), dict(num_classes=0), dict(global_pool=""),
])
def test_options_match_timm(overrides):
    ref, ours = pair("vit_tiny_patch16_224", depth=2, **overrides)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < TOL


def test_forward_skips_unused_rows_without_changing_the_result():
    for name in ("deit_small_patch16_224", "deit_small_distilled_patch16_224", "vit_small_patch14_reg4_dinov2"):
        model = randomize_(zoo.create(name, depth=3, img_size=112)).eval()
        x = torch.randn(2, 3, 112, 112)
        with torch.no_grad():
            assert max_diff(model(x), model.forward_head(model.forward_features(x))) < 1e-5
    # and in training, the gradients are those of the full computation
    model = randomize_(zoo.create("deit_tiny_patch16_224", depth=2, img_size=64))
    x = torch.randn(2, 3, 64, 64)
    model(x).square().sum().backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.forward_head(model.forward_features(x)).square().sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(fast[n], p.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_distilled_heads():
    model = randomize_(zoo.create("deit_tiny_distilled_patch16_224", depth=2, num_classes=7))
    x = torch.randn(2, 3, 224, 224)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        mean = (model.head(feats[:, 0]) + model.head_dist(feats[:, 1])) / 2
        assert max_diff(model(x), mean) < 1e-5
    model.train()
    model.distilled_training = True
    cls_logits, dist_logits = model(x)
    assert cls_logits.shape == dist_logits.shape == (2, 7)


def test_get_intermediate_layers_dinov2_semantics():
    model = randomize_(zoo.create("vit_small_patch14_reg4_dinov2", depth=4, img_size=70)).eval()
    x = torch.randn(2, 3, 70, 70)
    with torch.no_grad():
        tokens = model.forward_features(x)
        last = model.get_intermediate_layers(x, n=1)
        assert len(last) == 1 and last[0].shape == (2, 25, 384)
        assert max_diff(last[0], tokens[:, 5:]) < 1e-5  # 1 cls + 4 registers dropped
        picked = model.get_intermediate_layers(x, n=[0, -1], reshape=True, return_class_token=True, norm=False)
        assert [p.shape for p, _ in picked] == [(2, 384, 5, 5)] * 2
        assert max_diff(model.norm(picked[1][1]), tokens[:, 0]) < 1e-5
    with pytest.raises(ValueError, match="has 4 blocks"):
        model.get_intermediate_layers(x, n=5)
    with pytest.raises(ValueError, match="out of range"):
        model.get_intermediate_layers(x, n=[4])


def test_layer_decay_groups_with_timm_optimizer_helper():
    from timm.optim import param_groups_layer_decay

    model = zoo.create("vit_tiny_patch16_224", depth=4, num_classes=5)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5,
                                      no_weight_decay_list=model.no_weight_decay())
    scales = {}
    for g in groups:
        for p in g["params"]:
            scales[id(p)] = (g["lr_scale"], g["weight_decay"])
    named = dict(model.named_parameters())
    assert len(scales) == len(named)
    depth = 4  # layer ids: stem 0, blocks 1..4, head 5 -> scale 0.5 ** (5 - id)
    assert scales[id(named["patch_embed.proj.weight"])] == (0.5 ** (depth + 1), 0.05)
    assert scales[id(named["pos_embed"])] == (0.5 ** (depth + 1), 0.0)
    assert scales[id(named["blocks.0.attn.qkv.weight"])] == (0.5 ** depth, 0.05)
    assert scales[id(named["blocks.3.mlp.fc1.bias"])] == (0.5, 0.0)
    assert scales[id(named["norm.weight"])][0] == 0.5
    assert scales[id(named["head.weight"])] == (1.0, 0.05)


def test_grad_checkpointing_gives_the_same_gradients():
    model = randomize_(zoo.create("vit_tiny_patch16_224", depth=2, img_size=64))
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert all(max_diff(a, p.grad) < 1e-5 for a, p in zip(plain, model.parameters()))


def test_reset_classifier_and_no_weight_decay():
    model = zoo.create("deit_small_distilled_patch16_224", depth=1)
    model.reset_classifier(3)
    assert model.head.out_features == 3 and model.head_dist.out_features == 3
    model.reset_classifier(0)
    x = torch.randn(1, 3, 224, 224)
    assert model.eval()(x).shape == (1, 384)
    with pytest.raises(ValueError, match="distill"):
        model.reset_classifier(3, global_pool="avg")
    plain = zoo.create("vit_tiny_patch16_224", depth=1)
    plain.reset_classifier(10, global_pool="avg")
    assert plain.eval()(x).shape == (1, 10)
    keys = set(model.state_dict())
    assert {"pos_embed", "cls_token", "dist_token"} <= model.no_weight_decay()
    assert all(k in keys for k in model.no_weight_decay() if k != "reg_token")


def test_positional_embedding_kinds():
    fixed = zoo.create("vit_tiny_patch16_224", depth=1, pos_embed="sincos", img_size=64)
    assert not fixed.pos_embed.requires_grad
    assert torch.all(fixed.pos_embed[0, 0] == 0)
    assert torch.allclose(fixed.pos_embed[0, 1:], zoo.layers.sincos_2d_pos_embed(192, (4, 4)))
    none = zoo.create("vit_tiny_patch16_224", depth=1, pos_embed="none")
    assert "pos_embed" not in none.state_dict()
    assert none.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_set_input_size_matches_timm():
    ref, ours = pair("vit_small_patch14_reg4_dinov2", depth=2, img_size=126)
    ours.set_input_size((98, 154))
    ref.set_input_size(img_size=(98, 154))
    assert max_diff(ours.pos_embed, ref.pos_embed) < 1e-6
    x = torch.randn(1, 3, 98, 154)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < TOL


@pytest.mark.parametrize("shape, message", [
    ((2, 1, 224, 224), "expected 3 input channels, got 1"),
    ((3, 224, 224), "got a 3-d tensor"),
    ((2, 3, 256, 256), "expected input size 224x224 (the model's img_size), got 256x256"),
])
def test_wrong_input_raises_value_error(shape, message):
    model = zoo.create("vit_tiny_patch16_224", depth=1)
    with pytest.raises(ValueError) as err:
        model(torch.randn(*shape))
    assert message in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(global_pool="max"), "global_pool must be one of"),
    (dict(class_token=False), "needs class_token=True"),
    (dict(distilled=True, global_pool="avg"), "distilled=True needs"),
    (dict(mlp_layer="geglu"), "mlp_layer must be one of"),
    (dict(pos_embed="alibi"), "pos_embed must be one of"),
    (dict(embed_dim=100, num_heads=3), "not divisible by num_heads"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VisionTransformer(depth=1, **kwargs)
