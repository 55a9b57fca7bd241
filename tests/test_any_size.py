"""Weights reproduce their origin at every input size it accepts, with its own resampling convention:
transformers' models against transformers itself, timm's against timm, and the DINOv2 and MAE
repositories' rules written out below from their code's documented behaviour (neither is on PyPI)."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F
import transformers

import zoo
from zoo import factory
from zoo.layers import resample_pos_embed

from conftest import max_diff, randomize_
from test_convert import DINO, SMALL, randomize_hf_

TOL = 1e-4
# (H, W): square, rectangular, and not a multiple of the patch (transformers ignores the partial patch)
DINO_SIZES = [(84, 84), (70, 112), (100, 130), (42, 28)]
VIT_SIZES = [(48, 48), (40, 64), (64, 24)]


@pytest.mark.parametrize("kind", ["dinov2", "dinov2-registers"])
def test_transformers_dinov2_takes_any_size_as_transformers_does(kind, tmp_path):
    """transformers' Dinov2 (plain bicubic) and Dinov2WithRegisters (antialiased) interpolate on every
    call from the native grid; a checkpoint loaded with zoo.create(folder) does the same."""
    config = (transformers.Dinov2Config(**DINO) if kind == "dinov2" else
              transformers.Dinov2WithRegistersConfig(**DINO, num_register_tokens=4))
    hf = randomize_hf_(transformers.AutoModel.from_config(config))
    hf.save_pretrained(tmp_path)
    ours = zoo.create(str(tmp_path)).eval()
    assert ours.dynamic_img_size and ours.patch_embed.dynamic_img_crop
    assert ours.pos_embed_resample == ("bicubic" if kind == "dinov2" else "bicubic_antialias")
    for size in DINO_SIZES:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = hf(pixel_values=x).last_hidden_state
            assert max_diff(ours.forward_features(x), expected) < TOL, size


@pytest.mark.parametrize("kind", ["vit", "deit"])
def test_transformers_vit_with_interpolated_positions(kind, tmp_path):
    """transformers' ViT and DeiT take other sizes with interpolate_pos_encoding=True (plain bicubic);
    zoo does with dynamic_img_size=True, using the convention recorded when the folder was loaded."""
    config = transformers.ViTConfig(**SMALL) if kind == "vit" else transformers.DeiTConfig(**SMALL)
    hf = randomize_hf_(transformers.AutoModel.from_config(config, add_pooling_layer=False))
    hf.save_pretrained(tmp_path)
    fixed = zoo.create(str(tmp_path))
    assert fixed.pos_embed_resample == "bicubic" and not fixed.dynamic_img_size  # as transformers' default
    ours = zoo.create(str(tmp_path), dynamic_img_size=True).eval()
    for size in VIT_SIZES:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = hf(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
            assert max_diff(ours.forward_features(x), expected) < TOL, size


def test_the_old_antialiased_resampling_would_have_departed_from_transformers(tmp_path):
    """The issue's case, and why the convention matters: a Dinov2 grid of 4x4 resampled to 6x6 with
    timm's antialiased bicubic differs from transformers' plain bicubic far beyond tolerance."""
    pos = torch.randn(1, 16, 8)
    plain = resample_pos_embed(pos, (6, 6), (4, 4), method="bicubic")
    anti = resample_pos_embed(pos, (6, 6), (4, 4), method="bicubic_antialias")
    assert max_diff(plain, anti) > 0.05


@pytest.mark.parametrize("size", VIT_SIZES)
def test_timm_dynamic_size_and_load_time_resampling(size, tmp_path):
    """timm's own: antialiased bicubic, at run time (dynamic_img_size) and when loading at another size."""
    ref = randomize_(timm.create_model("vit_base_patch16_224", depth=1, img_size=32, patch_size=8,
                                       dynamic_img_size=True)).eval()
    ours = zoo.create("vit_base_patch16_224", depth=1, img_size=32, patch_size=8, dynamic_img_size=True).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert max_diff(ours.forward_features(x), ref.forward_features(x)) < TOL
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file
    save_file(ref.state_dict(), str(path))
    ref_at = timm.create_model("vit_base_patch16_224", depth=1, img_size=size, patch_size=8,
                               pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    ours_at = zoo.create("vit_base_patch16_224", depth=1, img_size=size, patch_size=8, checkpoint_path=path).eval()
    assert max_diff(ours_at.pos_embed, ref_at.pos_embed) < 1e-6


def dinov2_rule(table, rows, cols, offset, antialias):
    """What the DINOv2 repository documents for its position table at another grid: the (side x side)
    patch rows, as an image with one channel per feature, are resized by bicubic interpolation to
    rows x cols; its released models without registers set `interpolate_offset=0.1`, which makes the
    resize use the scale factors (n + 0.1) / side instead of the target size, and no antialiasing; the
    register models resize to the size, antialiased. Returns the patch rows only."""
    side = math.isqrt(table.shape[1] - 1)
    image = table[0, 1:].T.reshape(1, -1, side, side)  # (1, D, side, side)
    how = {"scale_factor": ((rows + offset) / side, (cols + offset) / side)} if offset else {"size": (rows, cols)}
    image = F.interpolate(image, mode="bicubic", antialias=antialias, **how)
    return image.reshape(image.shape[1], rows * cols).T[None]  # (1, rows * cols, D)


@pytest.mark.parametrize("registers", [False, True])
def test_dinov2_repository_release_resamples_as_the_repository(registers, tmp_path):
    """`zoo convert --from dinov2`: the model takes any multiple of the patch and adds the positions the
    repository's model adds (offset 0.1 without registers; antialiased to the size with registers)."""
    name = "vit_small_patch14_reg4_dinov2" if registers else "vit_small_patch14_dinov2"
    src = randomize_(timm.create_model(name, depth=1, img_size=28)).state_dict()
    original = {k: v for k, v in src.items()}
    cls_pos = torch.randn_like(src["cls_token"])
    if registers:
        original["register_tokens"] = original.pop("reg_token")
        original["pos_embed"] = torch.cat([cls_pos, src["pos_embed"]], dim=1)
        original["cls_token"] = src["cls_token"] - cls_pos
    torch.save(original, tmp_path / "release.pth")
    factory.convert_release(tmp_path / "release.pth", "dinov2", tmp_path / "o")
    ours = zoo.create(str(tmp_path / "o")).eval()
    assert ours.dynamic_img_size
    full_pos = original["pos_embed"]  # (1, 1 + M*M, D), class row first, as the repository keeps it
    for h, w in [(42, 42), (56, 70), (70, 28)]:
        x = torch.randn(1, 3, h, w)
        reference = dinov2_rule(full_pos, h // 14, w // 14, 0.0 if registers else 0.1, registers)
        patches = ours.patch_embed(x)
        with torch.no_grad():
            tokens = ours._embed(x)  # (1, prefix + N, D): prefix tokens, then patches + positions
        got = tokens[:, ours.num_prefix_tokens:] - patches
        assert max_diff(got, reference) < 1e-5, (h, w)


def test_mae_repository_release_at_another_size(tmp_path):
    """`zoo convert --from mae`, then built at another size: the MAE repository's interpolate_pos_embed
    (plain bicubic to the new grid, class row kept) written out."""
    src = randomize_(timm.create_model("vit_base_patch16_224", depth=1, num_classes=0)).state_dict()
    torch.save({"model": src}, tmp_path / "mae.pth")
    factory.convert_release(tmp_path / "mae.pth", "mae", tmp_path / "o")
    for size in (96, 160, 288):  # the repository resamples square grids only
        ours = zoo.create(str(tmp_path / "o"), img_size=size)
        n = size // 16
        grid = src["pos_embed"][:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(n, n), mode="bicubic", align_corners=False)
        expected = torch.cat([src["pos_embed"][:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
        assert max_diff(ours.pos_embed, expected) < 1e-6


def test_zoo_info_and_the_model_card_say_which_sizes_a_model_takes(tmp_path, capsys):
    from zoo.cli import main

    hf = randomize_hf_(transformers.Dinov2Model(transformers.Dinov2Config(**DINO)))
    hf.save_pretrained(tmp_path / "hf")
    assert main(["info", str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "sizes        any (pixels of a partial patch are ignored); positions resampled from 2x2 on each call " \
           "(bicubic)" in out
    card = (zoo.save_pretrained(zoo.create(str(tmp_path / "hf")), tmp_path / "z") / "README.md").read_text()
    assert "| Input sizes taken | any (pixels of a partial patch are ignored)" in card
    assert main(["info", "vit_small_patch14_dinov2"]) == 0
    assert "sizes        518x518 only" in capsys.readouterr().out
    assert main(["info", "swin_t", "--json"]) == 0
    assert '"input_sizes": "any (pixels of a partial patch are ignored); maps padded to whole windows by the ' \
           '\'timm\' rule"' in capsys.readouterr().out


def test_transformers_vitmae_encoder_with_interpolated_positions(tmp_path):
    """transformers' ViTMAE encoder (interpolate_pos_encoding=True, no masking, patches in order)."""
    config = transformers.ViTMAEConfig(**SMALL, mask_ratio=0.0)
    hf = randomize_hf_(transformers.ViTMAEModel(config))
    hf.save_pretrained(tmp_path)
    ours = zoo.create(str(tmp_path), dynamic_img_size=True).eval()
    assert ours.pos_embed_resample == "bicubic"
    for h, w in VIT_SIZES:
        x = torch.randn(2, 3, h, w)
        n = (h // 8) * (w // 8)
        noise = torch.arange(n, dtype=torch.float).expand(2, n)  # keeps every patch, in order
        with torch.no_grad():
            expected = hf(pixel_values=x, noise=noise, interpolate_pos_encoding=True).last_hidden_state
            assert max_diff(ours.forward_features(x), expected) < TOL, (h, w)
