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
