"""The families' converters (zoo/models/*_checkpoints.py), through zoo.create and `zoo convert`:
transformers repos and research checkpoints load into zoo's models and reproduce their reference implementations.

transformers models are randomly initialised and written with their own `save_pretrained`; research
checkpoints are laid out as the MAE and DINOv2 repositories publish them (timm's `checkpoint_filter_fn`
for those formats is the independent reference)."""
import argparse
import json
import re

import pytest
import safetensors.torch
import timm
import torch
import transformers
import yaml
from timm.models.swin_transformer import checkpoint_filter_fn as swin_checkpoint_filter_fn
from timm.models.vision_transformer import checkpoint_filter_fn

import zoo
from conftest import builtin_family, max_diff, randomize_
from hub_cache import add_folder_to_cache
from zoo import factory
from zoo.models.swin_checkpoints import from_swin_release
from zoo.weights import RepoConfigError
from zoo.cli import main
from zoo.registry import Registry

TOL = 1e-4
SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=192, image_size=32,
             patch_size=8)
DINO = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, image_size=28, patch_size=14)
MAE_DECODER = dict(decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                   decoder_intermediate_size=32, mask_ratio=0.0)


def randomize_hf_(model):
    """conftest.randomize_ plus transformers' names for positions and LayerScale."""
    randomize_(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "position_embeddings" in name:
                p.normal_(0, 0.1)
            elif name.endswith("lambda1"):
                p.uniform_(0.5, 1.0)
    return model.eval()


# name: (transformers model, what to compare, notes zoo reports)
TRANSFORMERS_CASES = {
    "vit": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(**SMALL, num_labels=5)),
            "logits", []),
    "vit-backbone": (lambda: transformers.ViTModel(transformers.ViTConfig(**SMALL)), "tokens",
                     ["dropped the pooler (Linear + tanh on the class token; zoo returns the normalised class token) "
                      "(2 tensors)"]),
    "deit-distilled": (lambda: transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(**SMALL, num_labels=5)), "logits", []),
    "dinov2": (lambda: transformers.Dinov2Model(transformers.Dinov2Config(**DINO)), "tokens",
               ["dropped the mask token (used only in masked pretraining) (1 tensor)"]),
    "dinov2-swiglu": (lambda: transformers.Dinov2Model(transformers.Dinov2Config(**DINO, use_swiglu_ffn=True)),
                      "tokens", ["dropped the mask token (used only in masked pretraining) (1 tensor)"]),
    "dinov2-registers": (lambda: transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(**DINO, num_register_tokens=4)), "tokens",
        ["dropped the mask token (used only in masked pretraining) (1 tensor)"]),
    "vit-mae": (lambda: transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**SMALL, **MAE_DECODER)),
                "mae", ["dropped the MAE decoder (24 tensors)"]),
    "swin": (lambda: transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4, num_labels=5)),
        "logits", []),
}


def reference_output(hf, kind, x):
    """What zoo must reproduce: logits, or every token after the final norm (class, distillation,
    registers, patches, in that order, as zoo's forward_features)."""
    if kind == "logits":
        return hf(pixel_values=x).logits
    if kind == "tokens":
        return hf(pixel_values=x).last_hidden_state
    # ViTMAE masks at random: with mask_ratio 0 and increasing noise every patch is kept, in order
    n = (x.shape[-1] // hf.config.patch_size) ** 2
    return hf.vit(pixel_values=x, noise=torch.arange(n, dtype=torch.float).expand(x.shape[0], n)).last_hidden_state


@pytest.mark.parametrize("case", list(TRANSFORMERS_CASES))
def test_transformers_repo_matches_transformers(tmp_path, case):
    make, kind, notes = TRANSFORMERS_CASES[case]
    hf = randomize_hf_(make())
    hf.save_pretrained(tmp_path / case)
    ours = zoo.create(str(tmp_path / case)).eval()
    x = torch.randn(2, 3, hf.config.image_size, hf.config.image_size)
    with torch.no_grad():
        expected = reference_output(hf, kind, x)
        got = ours(x) if kind == "logits" else ours.forward_features(x)
        assert expected.std() > 1e-2
        assert max_diff(got, expected) < TOL
    assert ours.zoo_config["weights"]["adapted"] == notes
    assert ours.num_classes == (5 if kind == "logits" else 0)


def test_transformers_dinov2_classifier_is_dropped_and_the_backbone_loaded(tmp_path):
    hf = randomize_hf_(transformers.Dinov2ForImageClassification(transformers.Dinov2Config(**DINO, num_labels=3)))
    hf.save_pretrained(tmp_path / "cls")
    ours = zoo.create(str(tmp_path / "cls")).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert max_diff(ours.forward_features(x), hf.dinov2(pixel_values=x).last_hidden_state) < TOL
    assert ours.num_classes == 0
    assert ours.zoo_config["weights"]["adapted"][0].startswith(
        "dropped transformers' Dinov2 classifier: it reads [class token, mean of patch tokens] (96 inputs)")


def test_transformers_deit_with_a_single_head_is_refused(tmp_path):
    transformers.DeiTForImageClassification(transformers.DeiTConfig(**SMALL, num_labels=3)).save_pretrained(tmp_path)
    with pytest.raises(RepoConfigError, match="DeiTForImageClassification reads only the class token"):
        zoo.create(str(tmp_path))


def test_transformers_repo_through_the_hub_cache(tmp_path, offline):
    hf = randomize_hf_(transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(**DINO, num_register_tokens=4)))
    hf.save_pretrained(tmp_path / "repo")
    (tmp_path / "repo" / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.2, 0.2]}))
    add_folder_to_cache(tmp_path / "cache", "facebook/dinov2-with-registers-pico", tmp_path / "repo")
    ours = zoo.create("hf-hub:facebook/dinov2-with-registers-pico", cache_dir=tmp_path / "cache").eval()
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert max_diff(ours.forward_features(x), hf(pixel_values=x).last_hidden_state) < TOL
    assert ours.zoo_config["input"]["mean"] == [0.5, 0.4, 0.3] and ours.zoo_config["input"]["img_size"] == [28, 28]
    # and saved by zoo, it is a zoo repo from then on
    again = zoo.create(str(zoo.save_pretrained(ours, tmp_path / "zoo"))).eval()
    with torch.no_grad():
        assert torch.equal(again(x), ours(x))


def test_registry_tag_in_transformers_format(tmp_path, offline):
    hf = randomize_hf_(transformers.ViTForImageClassification(transformers.ViTConfig(**SMALL, num_labels=5)))
    hf.save_pretrained(tmp_path / "repo")
    add_folder_to_cache(tmp_path / "cache", "google/vit-pico", tmp_path / "repo")
    (tmp_path / "reg.yaml").write_text("""\
variants:
  vit_pico_patch8_32:
    family: vit
    args: {img_size: 32, patch_size: 8, embed_dim: 48, depth: 2, num_heads: 3, norm_eps: 1.0e-12}
    input: {img_size: 32, mean: inception, std: inception}
    weights:
      in1k: {hf_hub_id: google/vit-pico, format: transformers, num_classes: 5, license: apache-2.0}
""")
    reg = Registry(builtin_files=[tmp_path / "reg.yaml"], plugins=False)
    reg.add_family(builtin_family("vit"))
    ours = zoo.create("vit_pico_patch8_32", pretrained=True, cache_dir=tmp_path / "cache", registry=reg).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_diff(ours(x), hf(pixel_values=x).logits) < TOL
    assert ours.zoo_config["weights"]["source"] == "hf-hub:google/vit-pico/model.safetensors"


def test_transformers_config_names_the_matching_variant():
    hf = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=3))  # ViT-B/16 at 224
    converted, variant = factory.convert_transformers(hf.config.to_dict(), hf.state_dict())
    assert variant.name == "vit_base_patch16_224" and converted.args["norm_eps"] == 1e-12
    with torch.device("meta"):
        hf = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=384, num_attention_heads=6,
                                                                image_size=518, patch_size=14))
    assert factory.convert_transformers(hf.config.to_dict(), hf.state_dict())[1].name == "vit_small_patch14_dinov2"


# ------------------------------------------------------------------------------ research checkpoints
def test_mae_pretrain_checkpoint_with_decoder(tmp_path, capsys):
    ref = randomize_(timm.create_model("vit_base_patch16_224", depth=1, num_classes=0)).eval()
    state = dict(ref.state_dict(), mask_token=torch.randn(1, 1, 512), **{
        "decoder_embed.weight": torch.randn(512, 768), "decoder_embed.bias": torch.randn(512),
        "decoder_pos_embed": torch.randn(1, 197, 512), "decoder_pred.weight": torch.randn(768, 512)})
    torch.save({"model": state}, tmp_path / "mae_pretrain_vit_base.pth")
    rc = main(["convert", "--from", "mae", str(tmp_path / "mae_pretrain_vit_base.pth"), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0 and out.strip() == str(tmp_path / "out")
    assert "dropped the MAE decoder and mask token (5 tensors)" in err
    ours = zoo.create(str(tmp_path / "out")).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < TOL
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["variant"], config["tag"], config["license"]) == ("vit_base_patch16_224", "mae", "cc-by-nc-4.0")
    assert config["args"]["depth"] == 1 and config["num_classes"] == 0
    front = yaml.safe_load((tmp_path / "out" / "README.md").read_text().split("---\n")[1])
    assert front["license"] == "cc-by-nc-4.0" and front["pipeline_tag"] == "image-feature-extraction"


def test_mae_finetuned_checkpoint_keeps_its_head(tmp_path):
    ref = randomize_(timm.create_model("vit_large_patch16_224", depth=1, global_pool="avg", num_classes=7)).eval()
    torch.save({"model": ref.state_dict()}, tmp_path / "mae_finetuned_vit_large.pth")
    out = factory.convert_release(tmp_path / "mae_finetuned_vit_large.pth", "mae", tmp_path / "o")
    ours = zoo.create(str(out)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < TOL
    assert ours.global_pool == "avg" and ours.num_classes == 7


def test_a_checkpoint_of_an_unregistered_size_needs_model(tmp_path):
    ref = randomize_(timm.create_model("vit_tiny_patch16_224", depth=1, num_classes=0, img_size=64)).eval()
    torch.save({"model": ref.state_dict()}, tmp_path / "mae_tiny.pth")
    with pytest.raises(RepoConfigError, match="no registered variant with a 'mae' weight tag has embed_dim=192, "
                                                  "patch_size=16; name the architecture with --model NAME"):
        factory.convert_release(tmp_path / "mae_tiny.pth", "mae", tmp_path / "o")
    ours = zoo.create(str(factory.convert_release(tmp_path / "mae_tiny.pth", "mae", tmp_path / "o",
                                                 model="vit_tiny_patch16_224"))).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(ours(x), ref(x)) < TOL


@pytest.mark.parametrize("name, img", [("vit_small_patch14_reg4_dinov2", 70), ("vit_giant_patch14_dinov2", 42)])
def test_dinov2_release_matches_timms_conversion(tmp_path, name, img):
    """The DINOv2 repo's layout: registers as `register_tokens` with the class token's position in
    `pos_embed`, SwiGLU as `w12`/`w3`, a `mask_token`. timm's own filter converts the same file."""
    src = randomize_(timm.create_model(name, depth=1, img_size=img)).state_dict()
    original = dict(src)
    if "giant" in name:  # SwiGLU; the plain MLP keeps fc1/fc2
        original = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v for k, v in src.items()}
    original["mask_token"] = torch.zeros(1, src["cls_token"].shape[-1])
    if "reg_token" in src:
        cls_pos = torch.randn_like(src["cls_token"])
        original["register_tokens"] = original.pop("reg_token")
        original["cls_token"] = src["cls_token"] - cls_pos
        original["pos_embed"] = torch.cat([cls_pos, src["pos_embed"]], dim=1)
    torch.save(original, tmp_path / "dinov2_pretrain.pth")
    ref = timm.create_model(name, depth=1, img_size=img).eval()
    ref.load_state_dict(checkpoint_filter_fn({k: v.clone() for k, v in original.items()}, ref))
    pth, out = str(tmp_path / "dinov2_pretrain.pth"), str(tmp_path / "o")
    assert main(["convert", "--from", "dinov2", pth, "--out", out]) == 0
    ours = zoo.create(str(tmp_path / "o")).eval()
    assert ours.zoo_config["name"] == name and ours.zoo_config["tag"] == "lvd142m"
    x = torch.randn(1, 3, img, img)
    with torch.no_grad():
        assert max_diff(ours.forward_features(x), ref.forward_features(x)) < TOL


def test_convert_unpickles_tensors_only(tmp_path, capsys):
    model = zoo.create("vit_tiny_patch16_224", depth=1, img_size=32)
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "train_state.pth")
    assert main(["convert", "--from", "mae", str(tmp_path / "train_state.pth"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "torch.load(weights_only=True) refused it: it holds an object of type argparse.Namespace" in err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------- Swin
# The Swin key maps are checked against timm's SwinTransformer, whose keys zoo's Swin shares.
SWIN = dict(img_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4)


def timm_swin(num_classes):
    return timm.create_model("swin_tiny_patch4_window7_224", num_classes=num_classes,
                             **{k: tuple(v) if isinstance(v, list) else v for k, v in SWIN.items()}).eval()


def test_transformers_swin_maps_to_timm_keys(tmp_path):
    config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[1, 2],
                                     window_size=4, num_labels=5)
    hf = randomize_hf_(transformers.SwinForImageClassification(config))
    hf.save_pretrained(tmp_path)
    state = safetensors.torch.load_file(tmp_path / "model.safetensors")
    converted, _ = factory.convert_transformers(json.loads((tmp_path / "config.json").read_text()), state)
    assert converted.family == "swin"
    assert converted.args == dict(SWIN, in_chans=3, mlp_ratio=4.0, qkv_bias=True, num_classes=5, **converted.conventions)
    assert converted.conventions == {"bias_table_resample": "bicubic", "window_padding": "swin", "dynamic_img_crop": False}
    ref = timm_swin(num_classes=5)
    ref.load_state_dict(converted.state_dict, strict=True)  # layers.0.downsample (HF) is timm's layers.1.downsample
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=x).logits
        assert expected.std() > 1e-2 and max_diff(ref(x), expected) < TOL


def test_swin_release_maps_to_timm_keys():
    """microsoft/Swin-Transformer's layout: merging at the end of each stage, `head`, and the
    relative_position_index / attn_mask buffers saved in the file."""
    src = randomize_(timm_swin(num_classes=5))
    original = {re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
                .replace("head.fc.", "head."): v for k, v in src.state_dict().items()}
    original.update({k: v for k, v in src.named_buffers() if k.endswith(("relative_position_index", "attn_mask"))})
    assert "layers.0.downsample.reduction.weight" in original and "layers.0.blocks.1.attn_mask" in original  # 4 + 1
    converted = from_swin_release({k: v.clone() for k, v in original.items()})
    assert converted.args == dict(SWIN, in_chans=3, mlp_ratio=4.0, qkv_bias=True, num_classes=5, **converted.conventions)
    assert converted.conventions == {"bias_table_resample": "bicubic", "window_padding": "swin", "dynamic_img_crop": False}
    assert converted.notes == ["dropped 5 buffers that the model computes itself (relative_position_index, attn_mask)"]
    timms_own = swin_checkpoint_filter_fn({k: v.clone() for k, v in original.items()}, timm_swin(num_classes=5))
    assert set(converted.state_dict) == set(timms_own)
    assert all(torch.equal(converted.state_dict[k], v) for k, v in timms_own.items())
    ref = timm_swin(num_classes=5)
    ref.load_state_dict(converted.state_dict, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_diff(ref(x), src(x)) == 0


def test_zoo_convert_from_swin_end_to_end(tmp_path):
    """`zoo convert --from swin` on a .pth laid out like microsoft/Swin-Transformer's releases (merging
    at the end of each stage, `head`, saved buffers, nested under "model"), then zoo.create on the result."""
    src = randomize_(zoo.create("swin_tiny_patch4_window7_224", depths=(2, 2, 2, 2), num_classes=5)).eval()
    original = {re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
                .replace("head.fc.", "head."): v for k, v in src.state_dict().items()}
    torch.save({"model": original}, tmp_path / "swin.pth")
    assert main(["convert", "--from", "swin", str(tmp_path / "swin.pth"), "--out", str(tmp_path / "out")]) == 0
    ours = zoo.create(str(tmp_path / "out")).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(ours(x), src(x)) == 0
    assert type(ours).__name__ == "SwinTransformer" and ours.num_classes == 5
