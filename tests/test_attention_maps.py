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
from zoo.eval.attention import attention_rollout, overlay

ALPHA = 0.55  # overlay's default: the heat map's share of each pixel


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
    bias = attn.qkv.bias
    if attn.q_bias is not None:  # DINOv3's query and value biases; the key's is zero
        bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
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
    model = randomize_(zoo.create("vit_small_patch16_dinov3", depth=3)).eval()
    x = torch.randn(1, 3, 64, 64)
    maps = zoo.attention_maps(model, x, layer=1, rollout=True)
    assert sdpa_calls == []  # the maps took the explicit path
    # rollout over blocks 0 and 1 of every block's weights (each equal to softmax(q k^T) written out: above)
    with torch.no_grad(), zoo.layers.capture_attention(model) as captured:
        model.forward_features(x)
    expected = attention_rollout(captured[:2])[:, 0, model.num_prefix_tokens:].reshape(1, 4, 4)
    assert max_diff(maps.rollout, expected) < 1e-6 and maps.rollout.std() > 0
    with torch.no_grad():
        model(x)
    assert len(sdpa_calls) == 3  # and every later forward the fused kernel, one call per block
    with pytest.raises(ValueError, match="layer 5 out of range"):
        zoo.attention_maps(model, x, layer=5)
    with pytest.raises(ValueError, match="head must be"):
        zoo.attention_maps(model, x, head=6)


def test_swin_window_map_equals_softmax_written_out():
    """At 64x64 the last stage is one 2 x 2 window (no shift): the map of block 0 is the attention each
    token receives, averaged over heads and queries, from softmax(q k^T / sqrt(d) + relative-position
    bias), the bias read from the table by offsets computed here."""
    model = randomize_(zoo.create("swin_tiny_patch4_window7_224", img_size=64, window_size=4, depths=(1, 1, 2, 2),
                                  embed_dim=24, num_heads=(1, 2, 2, 4))).eval()
    x = torch.randn(2, 3, 64, 64)
    block = model.layers[-1].blocks[0]
    seen = {}
    handle = block.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    maps = zoo.attention_maps(model, x, layer=0)
    handle.remove()
    assert maps.grid == (2, 2) and maps.attention.shape == (2, 2, 2)
    with torch.no_grad():
        h = block.norm1(seen["x"]).flatten(1, 2)  # (B, 4, C): the one window, row-major
        attn = block.attn
        q, k, _ = (h @ attn.qkv.weight.T + attn.qkv.bias).view(2, 4, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        rows, cols = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
        offset = (rows[:, None] - rows[None, :] + 1) * 3 + (cols[:, None] - cols[None, :] + 1)  # a 2 x 2 table window
        bias = attn.relative_position_bias_table[offset].permute(2, 0, 1)  # (heads, 4, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + bias, dim=-1)
    assert max_diff(maps.attention, weights.mean(1).mean(1).view(2, 2, 2)) < 1e-5
    x = torch.randn(1, 3, 128, 64)  # a 4 x 2 map: two windows, each's received attention sums to 1
    for layer in (0, 1):  # block 1 is a shifted-window block
        assert torch.allclose(zoo.attention_maps(model, x, layer=layer).attention.sum(), torch.tensor(2.0), atol=1e-5)
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
        picture = np.asarray(Image.open(path)).astype(np.float32) / 255
        assert picture.shape == (427, 640, 3)  # the photo's own size and aspect ratio
        photo = np.asarray(Image.open(photos[int(path.split("photo")[-1][0])])).astype(np.float32) / 255
        heat = (picture - (1 - ALPHA) * photo) / ALPHA  # the colour-mapped attention alone
        assert heat.std(axis=(0, 1)).max() > 0.1  # not uniform over the photo
    flat = overlay(torch.zeros(3, 8, 8), torch.full((2, 2), 0.3))  # a uniform map gives one colour: the check bites
    assert flat.std(dim=(1, 2)).max() < 1e-6
    assert main(["attention", str(tmp_path / "missing.png"), "--model", str(tmp_path / "model")]) == 2
    (tmp_path / "again").mkdir()  # another photo0.png: its maps get their own names
    Image.fromarray(load_sample_images().images[0]).save(tmp_path / "again" / "photo0.png")
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        assert main(["attention", str(photos[0]), str(tmp_path / "again" / "photo0.png"), "--model",
                     "vit_small_patch16_dinov3", "--size", "64", "--out", str(tmp_path / "twice")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "twice" / n) for n in
                                               ("photo0_attention.png", "photo0_2_attention.png")]
    assert main(["attention", str(photos[0]), "--model", str(tmp_path / "model"), "--size", "0"]) == 2
