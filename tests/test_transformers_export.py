"""Round trips with Hugging Face transformers: `zoo.save_pretrained(..., format="transformers")` writes a
folder that transformers' own `AutoModel` / `AutoModelForImageClassification` load with zoo's outputs,
for every family transformers has (ViT, DeiT, Dinov2 with and without registers, Swin, the MAE
encoder); and a transformers checkpoint loaded by zoo keeps its label names and license."""
import json

import pytest
import torch
import transformers
from huggingface_hub import ModelCard, ModelCardData

import zoo

from conftest import max_diff, randomize_

TOL = 1e-5
CASES = {  # name -> overrides; small, each family's own layout
    "vit-classifier": ("vit_base_patch16_224", dict(depth=2, num_classes=5)),
    "vit-backbone": ("vit_base_patch16_224", dict(depth=2, num_classes=0)),
    "deit-distilled": ("deit_small_distilled_patch16_224", dict(depth=2, num_classes=7)),
    "deit-plain": ("deit_small_patch16_224", dict(depth=2, num_classes=3)),
    "dinov2": ("vit_small_patch14_dinov2", dict(depth=2, img_size=56)),
    "dinov2-registers": ("vit_small_patch14_reg4_dinov2", dict(depth=2, img_size=56)),
    "dinov2-swiglu": ("vit_giant_patch14_dinov2", dict(depth=1, img_size=28)),
    "swin-classifier": ("swin_tiny_patch4_window7_224", dict(depths=(1, 1, 2, 1), num_classes=4)),
    "swin-backbone": ("swin_tiny_patch4_window7_224", dict(depths=(1, 1, 2, 1), num_classes=0)),
    "mae-encoder": ("vit_base_patch16_224.mae", dict(depth=1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_transformers_loads_zoos_export_with_equal_outputs(case, tmp_path):
    name, overrides = CASES[case]
    model = randomize_(zoo.create(name, **overrides)).eval()
    if model.num_classes:
        model.zoo_config["label_names"] = [f"class {i}" for i in range(model.num_classes)]
    out = zoo.save_pretrained(model, tmp_path / case, format="transformers")
    auto = transformers.AutoModelForImageClassification if model.num_classes else transformers.AutoModel
    hf = auto.from_pretrained(out).eval()
    x = torch.randn(2, 3, *model.zoo_config["input"]["img_size"])
    with torch.no_grad():
        got = hf(pixel_values=x)
        if model.num_classes:
            assert max_diff(got.logits, model(x)) < TOL
            assert hf.config.id2label[1] == "class 1"
        else:
            tokens = model.forward_features(x)
            assert max_diff(got.last_hidden_state, tokens.flatten(1, 2) if tokens.ndim == 4 else tokens) < TOL
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == list(model.zoo_config["input"]["mean"])
    back = zoo.create(str(out)).eval()  # and zoo reads its own export back
    with torch.no_grad():
        assert max_diff(back(x), model(x)) < TOL
    if model.num_classes:
        assert back.zoo_config["label_names"][:2] == ["class 0", "class 1"]


def test_a_transformers_checkpoint_keeps_its_labels_and_license(tmp_path):
    config = transformers.ViTConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=192,
                                    image_size=32, patch_size=8, num_labels=3,
                                    id2label={0: "cat", 1: "dog", 2: "bird"}, label2id={"cat": 0, "dog": 1, "bird": 2})
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    ModelCard.from_template(ModelCardData(license="cc-by-nc-4.0", library_name="transformers")).save(tmp_path / "README.md")
    model = zoo.create(str(tmp_path))
    assert model.zoo_config["label_names"] == ["cat", "dog", "bird"]
    assert model.zoo_config["weights"]["license"] == "cc-by-nc-4.0"
    saved = zoo.save_pretrained(model, tmp_path / "zoo")  # carried on
    assert json.loads((saved / "config.json").read_text())["license"] == "cc-by-nc-4.0"
    plain = transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=192, image_size=32, patch_size=8,
        num_labels=3))
    plain.save_pretrained(tmp_path / "plain")  # transformers' placeholder names are no label names
    assert "label_names" not in zoo.create(str(tmp_path / "plain")).zoo_config


@pytest.mark.parametrize("name, overrides, message", [
    ("vit_base_patch16_224", dict(depth=1, global_pool="avg"), "average pooling"),
    ("vit_small_patch14_dinov2", dict(depth=1, img_size=28, num_classes=3), "export the backbone"),
    ("swin_tiny_patch4_window7_224", dict(depths=(1, 1, 1, 1), global_pool="max"), "pools by average"),
])
def test_what_transformers_cannot_hold_is_refused_before_anything_is_written(name, overrides, message, tmp_path):
    model = zoo.create(name, **overrides)
    with pytest.raises(ValueError, match=f"format='transformers': .*{message}"):
        zoo.save_pretrained(model, tmp_path / "x", format="transformers")
    assert not any((tmp_path / "x").iterdir())  # no file at all
