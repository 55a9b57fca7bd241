"""timm's dense-feature API on zoo's ViT family (`forward_intermediates`, `prune_intermediate_layers`),
compared with timm's own for the same weights: ViT, distilled DeiT, DINOv2 with registers, at the
native size and at another (dynamic) one, NCHW and NLC, with prefix tokens, norm and stop_early."""
import pytest
import timm
import torch

import zoo

from conftest import max_diff, randomize_

CASES = {
    "vit_base_patch16_224": dict(depth=3, img_size=64, patch_size=16),
    "deit_small_distilled_patch16_224": dict(depth=3, img_size=64),
    "vit_small_patch14_reg4_dinov2": dict(depth=3, img_size=56),
}


def pair(name, **extra):
    ref = randomize_(timm.create_model(name, **CASES[name], **extra)).eval()
    ours = zoo.create(name, **CASES[name], **extra).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("kwargs", [
    dict(), dict(indices=2, output_fmt="NLC"), dict(indices=[0, -1], norm=True, return_prefix_tokens=True),
    dict(indices=[1], stop_early=True, intermediates_only=True),
])
def test_forward_intermediates_matches_timm(name, kwargs):
    ours, ref = pair(name)
    x = torch.randn(2, 3, CASES[name]["img_size"], CASES[name]["img_size"])
    with torch.no_grad():
        got, expected = ours.forward_intermediates(x, **kwargs), ref.forward_intermediates(x, **kwargs)
    if not kwargs.get("intermediates_only"):
        assert max_diff(got[0], expected[0]) < 1e-5
        got, expected = got[1], expected[1]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        pairs = zip(a, b) if isinstance(a, tuple) else [(a, b)]
        for u, v in pairs:
            assert u.shape == v.shape and max_diff(u, v) < 1e-5


def test_at_another_size_and_pruned():
    ours, ref = pair("vit_small_patch14_reg4_dinov2", dynamic_img_size=True)
    x = torch.randn(1, 3, 70, 42)
    with torch.no_grad():
        a = ours.forward_intermediates(x, indices=1, intermediates_only=True)[0]
        b = ref.forward_intermediates(x, indices=1, intermediates_only=True)[0]
    assert a.shape == (1, 384, 5, 3) and max_diff(a, b) < 1e-5
    assert ours.prune_intermediate_layers([0, 1]) == ref.prune_intermediate_layers([0, 1]) == [0, 1]
    assert len(ours.blocks) == 2 and ours.num_classes == 0
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW' or 'NLC'"):
        ours.forward_intermediates(x, output_fmt="NHWC")


# ------------------------------------------------------------------------- features_only backbones
FEATURE_CASES = {  # name: (small architecture, input, out_indices to try)
    "vit_small_patch16_224": (dict(depth=4, img_size=64), (2, 3, 64, 64), (1, 3)),
    "vit_small_patch16_dinov3": (dict(depth=3), (2, 3, 64, 80), (0, 2)),
    "swin_tiny_patch4_window7_224": (dict(img_size=64, window_size=4, depths=(1, 1, 2, 1), embed_dim=24,
                                          num_heads=(1, 2, 2, 4)), (1, 3, 64, 64), (1, 2, 3)),
}


@pytest.mark.parametrize("name", list(FEATURE_CASES))
@pytest.mark.parametrize("default_indices", [True, False])
def test_features_only_matches_timm(name, default_indices):
    arch, shape, indices = FEATURE_CASES[name]
    kw = {} if default_indices else dict(out_indices=indices)
    ref = randomize_(timm.create_model(name, features_only=True, **arch, **kw)).eval()
    ours = zoo.create(name, features_only=True, **arch, **kw).eval()
    swin = name.startswith("swin")
    # timm's Swin feature net flattens its stages (`layers_0.*`, no `model.` prefix); zoo keeps the model's keys
    state = {("model." + k.replace("layers_", "layers.") if swin else k): v for k, v in ref.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(*shape)
    with torch.no_grad():
        got, want = ours(x), ref(x)
    if swin:  # timm's Swin feature maps are NHWC; zoo's are NCHW for every family
        want = [w.permute(0, 3, 1, 2) for w in want]
    assert len(got) == len(want) == len(ours.feature_info)
    for a, b in zip(got, want):
        assert a.shape == b.shape and max_diff(a, b) < 1e-4
    for accessor in ("channels", "reduction", "module_name"):
        assert getattr(ours.feature_info, accessor)() == getattr(ref.feature_info, accessor)()


def test_features_only_prunes_and_checks():
    backbone = zoo.create("vit_small_patch16_224", depth=6, img_size=64, features_only=True, out_indices=(1, 2))
    assert len(backbone.model.blocks) == 3 and isinstance(backbone.model.head, torch.nn.Identity)
    assert [m.shape for m in backbone(torch.randn(1, 3, 64, 64))] == [(1, 384, 4, 4)] * 2
    with pytest.raises(ValueError, match="out of range"):
        zoo.create("vit_small_patch16_224", depth=6, img_size=64, features_only=True, out_indices=(7,))
    with pytest.raises(TypeError, match="out_indices only apply with features_only=True"):
        zoo.create("vit_small_patch16_224", depth=2, out_indices=(1,))
    with pytest.raises(ValueError, match="features_only backbone"):
        zoo.save_pretrained(backbone, "unused")


def test_swin_prune_matches_timm():
    arch = FEATURE_CASES["swin_tiny_patch4_window7_224"][0]
    ref = randomize_(timm.create_model("swin_tiny_patch4_window7_224", **arch)).eval()
    ours = zoo.create("swin_tiny_patch4_window7_224", **arch).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.prune_intermediate_layers([0, 2]) == ref.prune_intermediate_layers([0, 2]) == [0, 2]
    assert len(ours.layers) == 3 and ours.num_classes == 0
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = ours.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
        want = ref.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    assert all(max_diff(a, b) < 1e-4 for a, b in zip(got, want))


def test_mae_encoder_intermediates_equal_the_vits():
    """The MAE model's forward_intermediates run its encoder on the whole image: timm's ViT with the
    encoder's weights (timm's keys) gives the same maps; features_only on an MAE is its encoder's."""
    mae = randomize_(zoo.create("mae_vit_base_patch16_dec512d8b", depth=2, img_size=64, decoder_depth=1)).eval()
    ref = timm.create_model("vit_base_patch16_224", depth=2, img_size=64, num_classes=0).eval()
    ref.load_state_dict(mae.encoder.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (final, maps), (ref_final, ref_maps) = mae.forward_intermediates(x), ref.forward_intermediates(x)
        assert max_diff(final, ref_final) < 1e-5 and all(max_diff(a, b) < 1e-5 for a, b in zip(maps, ref_maps))
        backbone = zoo.create("mae_vit_base_patch16_dec512d8b", depth=2, img_size=64, decoder_depth=1,
                              features_only=True, out_indices=(1,))
        assert backbone.feature_info.channels() == [768]


@pytest.mark.parametrize("name", list(FEATURE_CASES))
def test_gradient_checkpointing_through_features_only(name):
    arch, shape, indices = FEATURE_CASES[name]
    backbone = randomize_(zoo.create(name, features_only=True, out_indices=indices, **arch)).train()
    x = torch.randn(*shape)
    grads = []
    for on in (False, True):
        backbone.zero_grad()
        backbone.set_grad_checkpointing(on)
        torch.manual_seed(0)  # the same stochastic-depth draws in both runs
        sum(m.square().mean() for m in backbone(x)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in backbone.parameters() if p.grad is not None]))
    assert max_diff(*grads) < 1e-5 and grads[0].abs().sum() > 0


def test_vitdet_simple_feature_pyramid():
    """ViTDet's pyramid on the last block's map: strides 4, 8, 16, 32 at patch 16; the stride-16 level is
    the map through 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d, written out here with F.conv2d."""
    import torch.nn.functional as F

    backbone = randomize_(zoo.create("vit_small_patch16_dinov3", depth=2, features_only=True, feature_pyramid=32))
    backbone.eval()
    assert backbone.feature_info.reduction() == [4, 8, 16, 32] and backbone.feature_info.channels() == [32] * 4
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        maps = backbone(x)
        assert [tuple(m.shape) for m in maps] == [(2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]
        last = backbone.model.forward_intermediates(x, [1], intermediates_only=True)[0]
        conv1, norm1, conv3, norm3 = backbone.pyramid.outputs[2]

        def ln2d(t, norm):
            return F.layer_norm(t.permute(0, 2, 3, 1), t.shape[1:2], norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)

        by_hand = ln2d(F.conv2d(ln2d(F.conv2d(last, conv1.weight), norm1), conv3.weight, padding=1), norm3)
        assert max_diff(maps[2], by_hand) < 1e-5
    backbone.train()
    sum(m.mean() for m in backbone(x)).backward()
    assert backbone.model.blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reads one block"):
        zoo.create("vit_small_patch16_dinov3", depth=2, features_only=True, feature_pyramid=32, out_indices=(0, 1))
    with pytest.raises(ValueError, match="stages of its own"):
        zoo.create("swin_tiny_patch4_window7_224", features_only=True, feature_pyramid=32)
