"""Attention maps (`zoo.attention_maps`, `zoo attention`): the class token's attention equals softmax(q k^T)
written out from the weights (ViT with registers, DINOv3 with RoPE from transformers' own rotary
layer), rollout equals a 2-block case computed by hand, Swin's window map adds up as windows do, the
fused kernel stays in use outside, and the command writes non-uniform PNGs with the photos' shapes."""
import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from conftest import max_diff, randomize_
from zoo.cli import main
from zoo.eval.attention import attention_rollout


def block_input(model, x, index):
    """The tokens entering block `index` (B, T, D), caught by a hook."""
    seen = {}
    handle = model.blocks[index].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model.forward_features(x)
    handle.remove()
    return seen["x"]


def by_hand(model, x, index, rope=None):
    """softmax(q k^T / sqrt(d)) of block `index`, from its weights: (B, heads, T, T)."""
    block = model.blocks[index]
    h = block.norm1(block_input(model, x, index))
    attn = block.attn
    bias = attn.qkv.bias if attn.q_bias is None else torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
    qkv = h @ attn.qkv.weight.T + (0 if bias is None else bias)
    B, T, _ = qkv.shape
    q, k, _ = qkv.view(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    if rope is not None:  # (cos, sin) for the patches, the last tokens
        cos, sin = rope
        n = cos.shape[0]
        half = lambda t: torch.cat([-t[..., t.shape[-1] // 2:], t[..., : t.shape[-1] // 2]], dim=-1)  # noqa: E731
        q = torch.cat([q[..., :-n, :], q[..., -n:, :] * cos + half(q[..., -n:, :]) * sin], dim=-2)
        k = torch.cat([k[..., :-n, :], k[..., -n:, :] * cos + half(k[..., -n:, :]) * sin], dim=-2)
    return torch.softmax(q @ k.transpose(-1, -2) / attn.head_dim ** 0.5, dim=-1)


@pytest.mark.parametrize("name", ["vit_small_patch14_reg4_dinov2", "vit_small_patch16_dinov3_qkvb"])
@pytest.mark.parametrize("head", ["mean", 1])
def test_class_token_map_equals_softmax_written_out(name, head):
    model = randomize_(zoo.create(name, depth=3, img_size=(56, 84) if "dinov2" in name else 256)).eval()
    x = torch.randn(2, 3, 56, 84) if "dinov2" in name else torch.randn(2, 3, 48, 80)
    rope = None
    if "dinov3" in name:
        from transformers import DINOv3ViTConfig
        from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTRopePositionEmbedding
        rope = DINOv3ViTRopePositionEmbedding(DINOv3ViTConfig(hidden_size=384, num_attention_heads=6)).eval()(x)
    maps = zoo.attention_maps(model, x, layer=1, head=head)
    with torch.no_grad():
        expected = by_hand(model, x, 1, rope)
    expected = expected.mean(1) if head == "mean" else expected[:, head]
    grid = maps.grid
    assert grid == ((4, 6) if "dinov2" in name else (3, 5))
    p = model.num_prefix_tokens  # 5: class token + 4 registers, left out of the map
    assert max_diff(maps.attention, expected[:, 0, p:].reshape(2, *grid)) < 1e-5
    assert maps.attention.sum((1, 2)).max() < 1  # the registers and the class token take some attention


def test_rollout_by_hand():
    """Two blocks, two tokens, two heads whose mean is A1 = [[.5, .5], [.2, .8]], then A2 = [[.9, .1], [.4, .6]]:
    0.5 A + 0.5 I gives [[.75, .25], [.1, .9]] and [[.95, .05], [.2, .8]]; their product (A2' A1') is
    [[.7175, .2825], [.23, .77]]."""
    a1 = torch.tensor([[[0.6, 0.4], [0.3, 0.7]], [[0.4, 0.6], [0.1, 0.9]]])[None]  # (1, 2 heads, 2, 2)
    a2 = torch.tensor([[0.9, 0.1], [0.4, 0.6]]).expand(1, 2, 2, 2)
    assert torch.allclose(attention_rollout([a1, a2])[0], torch.tensor([[0.7175, 0.2825], [0.23, 0.77]]))
    assert torch.allclose(attention_rollout([a1])[0], torch.tensor([[0.75, 0.25], [0.1, 0.9]]))


def test_rollout_of_a_model_and_the_fused_path_outside(sdpa_calls):
    model = randomize_(zoo.create("vit_small_patch16_dinov3", depth=2)).eval()
    x = torch.randn(1, 3, 64, 64)
    maps = zoo.attention_maps(model, x, rollout=True)
    assert maps.rollout.shape == (1, 4, 4) and sdpa_calls == []  # the maps took the explicit path
    with torch.no_grad():
        model(x)
    assert len(sdpa_calls) == 2  # and every later forward the fused kernel, one call per block
    with pytest.raises(ValueError, match="layer 5 out of range"):
        zoo.attention_maps(model, x, layer=5)
    with pytest.raises(ValueError, match="head must be"):
        zoo.attention_maps(model, x, head=6)


def test_swin_window_map():
    model = randomize_(zoo.create("swin_tiny_patch4_window7_224", img_size=64, window_size=4, depths=(1, 1, 2, 2),
                                  embed_dim=24, num_heads=(1, 2, 2, 4))).eval()
    assert model.layers[-1].blocks[1].shift_size == (1, 1)  # the last stage: 2 x 2 windows, then shifted ones
    x = torch.randn(2, 3, 128, 64)  # last stage map 4 x 2: two windows
    for layer in (0, -1):
        maps = zoo.attention_maps(model, x, layer=layer)
        assert maps.grid == (4, 2) and maps.attention.shape == (2, 4, 2)
        # the attention a window's tokens receive, averaged over its queries, sums to 1 per window
        assert torch.allclose(maps.attention.sum((1, 2)), torch.full((2,), 2.0), atol=1e-5)
    one = zoo.attention_maps(model, x, layer=0, head=3).attention
    with torch.no_grad(), zoo.layers.capture_attention(model) as attns:
        model.forward_features(x)
    window = attns[-2][:, 0, 3].mean(1)  # image b, first window (rows 0-1), head 3: (B, 4) in row-major order
    assert max_diff(one[:, :2, :], window.view(2, 2, 2)) < 1e-6
    with pytest.raises(ValueError, match="rollout"):
        zoo.attention_maps(model, x, rollout=True)


def test_command_draws_the_sample_photos(tmp_path, capsys):
    from sklearn.datasets import load_sample_images

    photos = []
    for i, array in enumerate(load_sample_images().images):  # two 427 x 640 photos
        photos.append(tmp_path / f"photo{i}.png")
        Image.fromarray(array).save(photos[-1])
    model = randomize_(zoo.create("vit_small_patch16_dinov3", depth=2))
    zoo.save_pretrained(model, tmp_path / "model")
    assert main(["attention", *map(str, photos), "--model", str(tmp_path / "model"), "--rollout", "--head", "2",
                 "--out", str(tmp_path / "maps")]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == 4
    for path in written:
        picture = np.asarray(Image.open(path))
        assert picture.shape == (427, 640, 3)  # the photo's own size and aspect ratio
        assert picture.std() > 10
    assert main(["attention", str(tmp_path / "missing.png"), "--model", str(tmp_path / "model")]) == 2
