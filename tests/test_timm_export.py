"""`save_pretrained(..., format="timm")` for every family, default and custom heads: the folder loads
through timm's own loader (`timm.create_model("local-dir:...")`, and `hf-hub:` from a local Hub cache
with HF_HUB_OFFLINE) and gives zoo's outputs; label names survive in timm's `label_names`."""
import json

import pytest
import timm
import torch

import zoo

from conftest import max_diff, randomize_
from hub_cache import add_folder_to_cache

TOL = 1e-5
CASES = {  # name -> overrides (small, but each family's own layout: tokens, heads, stages)
    "vit_base_patch16_224": dict(depth=1),
    "deit_small_distilled_patch16_224": dict(depth=1),
    "vit_small_patch14_reg4_dinov2": dict(depth=1, img_size=56),
    "vit_base_patch16_224.mae": dict(depth=1),
    "swin_tiny_patch4_window7_224": dict(depths=(1, 1, 1, 1)),
    "swin_base_patch4_window12_384": dict(depths=(1, 1, 1, 1), img_size=192),
}
HEADS = {"default": {}, "custom": {"num_classes": 7}, "none": {"num_classes": 0}}


def build(name, head):
    base, _, tag = name.partition(".")
    model = zoo.create(base, pretrained=False, **CASES[name], **HEADS[head])
    model.zoo_config["tag"] = tag or None
    return randomize_(model).eval()


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("name", list(CASES))
def test_timm_loads_the_export_with_its_own_loader(name, head, tmp_path):
    model = build(name, head)
    out = zoo.save_pretrained(model, tmp_path / "export", format="timm")
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == model.num_classes == config["pretrained_cfg"]["num_classes"]
    ref = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    size = model.zoo_config["input"]["img_size"]
    assert tuple(ref.pretrained_cfg["input_size"]) == (3, *size)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert max_diff(ref(x), model(x)) < TOL
        assert max_diff(ref.forward_features(x), model.forward_features(x)) < TOL


@pytest.mark.parametrize("name", ["deit_small_distilled_patch16_224", "swin_tiny_patch4_window7_224"])
def test_timm_loads_the_export_from_a_hub_cache(name, tmp_path, offline):
    model = build(name, "custom")
    model.zoo_config["label_names"] = [f"class {i}" for i in range(7)]
    out = zoo.save_pretrained(model, tmp_path / "export", format="timm")
    add_folder_to_cache(tmp_path / "cache", "me/exported", out)
    ref = timm.create_model("hf-hub:me/exported", pretrained=True, cache_dir=tmp_path / "cache").eval()
    assert ref.pretrained_cfg["label_names"] == model.zoo_config["label_names"]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(ref(x), model(x)) < TOL


def test_what_timm_cannot_build_is_refused_before_anything_is_written(tmp_path):
    model = zoo.create("vit_small_patch14_dinov2", depth=1, mlp_layer="swiglu")
    with pytest.raises(ValueError, match="mlp_layer='swiglu' differs from timm's vit_small_patch14_dinov2"):
        zoo.save_pretrained(model, tmp_path / "x", format="timm")
    assert not (tmp_path / "x" / "model.safetensors").exists()


@pytest.mark.parametrize("name, conventions", [
    ("vit_base_patch16_224", dict(depth=1, pos_embed_resample="bicubic", dynamic_img_size=True, dynamic_img_crop=True)),
    ("swin_tiny_patch4_window7_224", dict(depths=(1, 1, 1, 1), window_padding="swin", dynamic_img_crop=False,
                                          bias_table_resample="bicubic")),
])
def test_a_model_with_another_origins_conventions_exports_with_a_warning(name, conventions, tmp_path, caplog):
    """Loaded from transformers or a repository, a model carries that origin's rules for other sizes,
    which timm's constructor cannot take: the export leaves them out, says so, and timm reproduces the
    model at its saved size."""
    model = randomize_(zoo.create(name, **conventions)).eval()
    with caplog.at_level("WARNING", logger="zoo.weights"):
        out = zoo.save_pretrained(model, tmp_path / "export", format="timm")
    assert "timm has its own rules for other input sizes" in caplog.text
    ref = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(ref(x), model(x)) < TOL
