"""registry.yaml and the registry API: every entry rebuilds, bad files fail with precise messages."""
import textwrap

import pytest
import torch

import zoo
from zoo.complexity import count_params
from zoo.models.vit import VisionTransformer
from zoo.registry import Registry, RegistryError, UnknownModelError


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_entry_rebuilds_with_its_recorded_parameter_count(name):
    info = zoo.model_info(name)
    assert info.params is not None, f"{name}: registry.yaml should record params"
    with torch.device("meta"):
        model = zoo.create(name)
    assert count_params(model) == info.params
    for tag, weight in info.weights.items():
        assert weight.hf_hub_id.startswith("timm/") and weight.hf_hub_id.endswith(f"{name}.{tag}")
        assert weight.license


def test_aliases_tags_and_listing():
    assert zoo.model_info("vit_b_16").name == "vit_base_patch16_224"
    assert zoo.model_info("VIT_B_16").name == "vit_base_patch16_224"
    for alias, name in [("vit_l_16", "vit_large_patch16_224"), ("vit_h_14", "vit_huge_patch14_224"),
                        ("deit_s", "deit_small_patch16_224"), ("dinov2_vits14", "vit_small_patch14_dinov2"),
                        ("dinov2_vitg14_reg", "vit_giant_patch14_reg4_dinov2")]:
        assert zoo.model_info(alias).name == name
    assert zoo.list_models("deit*distilled*") == [
        "deit_base_distilled_patch16_224", "deit_base_distilled_patch16_384",
        "deit_small_distilled_patch16_224", "deit_tiny_distilled_patch16_224"]
    assert zoo.list_models("dinov2_vitb14*") == ["vit_base_patch14_dinov2", "vit_base_patch14_reg4_dinov2"]
    # every built-in has weights except the MAE pretraining models (timm publishes MAE encoders only)
    assert set(zoo.list_models(pretrained=True)) == set(zoo.list_models()) - set(zoo.list_models(family="mae"))
    assert zoo.list_models(family="nope") == []
    info = zoo.model_info("vit_base_patch16_224")
    assert info.default_tag == "augreg2_in21k_ft_in1k" and info.weights["augreg2_in21k_ft_in1k"].top1 == 85.1
    assert info.input.mean == (0.5, 0.5, 0.5) and info.weights["mae"].input.mean == (0.485, 0.456, 0.406)


def test_create_applies_tag_and_overrides():
    mae = zoo.create("vit_base_patch16_224.mae", depth=1)
    assert mae.num_classes == 0 and isinstance(mae.head, torch.nn.Identity)
    assert mae.zoo_config["tag"] == "mae" and mae.zoo_config["input"]["mean"] == [0.485, 0.456, 0.406]
    small = zoo.create("deit_s", num_classes=7, img_size=(96, 128), drop_path_rate=0.1, depth=2)
    assert small.head.out_features == 7 and small.patch_embed.img_size == (96, 128)
    assert small.zoo_config["name"] == "deit_small_patch16_224"
    assert small.zoo_config["input"]["img_size"] == [96, 128]
    assert small.zoo_config["args"]["drop_path_rate"] == 0.1
    with pytest.raises(TypeError, match="unknown argument 'drop_path' for family 'vit' \\(did you mean 'drop_path_rate'"):
        zoo.create("deit_s", drop_path=0.1)


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UnknownModelError, match="unknown model 'vit_bse'; did you mean 'vit_base_patch14_dinov2'"):
        zoo.create("vit_bse")
    with pytest.raises(UnknownModelError, match="'deit_s_patch16_224'.*'deit_small_patch16_224'"):
        zoo.model_info("deit_s_patch16_224")
    with pytest.raises(UnknownModelError, match="no weight tag 'in1k'.*tags: fb_in1k"):
        zoo.create("deit_s.in1k")


# ------------------------------------------------------------------------------ registry.yaml errors
def load(tmp_path, text, name="reg.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    reg = Registry(builtin_files=[path], plugins=False)
    reg.register_family("vit", VisionTransformer)
    reg.ensure_loaded()
    return reg, path


GOOD = """\
    variants:
      tiny:
        family: vit
        aliases: [t]
        args: {img_size: 32, patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}
        input: {img_size: 32, mean: inception, std: [0.1, 0.2, 0.3]}
        weights:
          first: {hf_hub_id: me/tiny, num_classes: 0, top1: 50.5}
          second: {hf_hub_id: me/tiny-2, input: {crop_pct: 1.0}}
"""


def test_a_good_file_loads(tmp_path):
    reg, _ = load(tmp_path, GOOD)
    v = reg.model_info("t")
    assert v.name == "tiny" and v.default_tag == "first" and v.input.std == (0.1, 0.2, 0.3)
    assert v.weights["first"].num_classes == 0 and v.weights["second"].num_classes == 1000
    assert v.weights["second"].input.crop_pct == 1.0 and v.weights["second"].input.mean == (0.5, 0.5, 0.5)
    assert zoo.create("t.first", registry=reg).num_classes == 0


@pytest.mark.parametrize("text, expected", [
    ("variants:\n  tiny: {family: vit\n", ["reg.yaml", "malformed YAML", "line"]),
    (GOOD.replace("family: vit", "family: vitt"),
     ["reg.yaml", "variant 'tiny'", "field 'family'", "unknown family 'vitt'", "did you mean 'vit'"]),
    (GOOD.replace("embed_dim: 32", "embed_dimm: 32"),
     ["reg.yaml", "variant 'tiny'", "field 'args.embed_dimm'", "did you mean 'embed_dim'"]),
    (GOOD + """\
      tiny:
        family: vit
        input: {img_size: 32}
""", ["reg.yaml", "duplicate key 'tiny' at line 10 (first at line 2)"]),
    (GOOD + """\
      other:
        family: vit
        aliases: [t]
        input: {img_size: 32}
""", ["reg.yaml", "variant 'other'", "field 'aliases'", "duplicate alias 't'", "variant 'tiny'"]),
    (GOOD + """\
      t:
        family: vit
        input: {img_size: 32}
""", ["variant 't'", "field 'name'", "duplicate name 't'", "variant 'tiny'"]),
    (GOOD.replace("mean: inception", "mean: imagenett"), ["variant 'tiny'", "field 'input'", "unknown preset"]),
    (GOOD.replace("hf_hub_id: me/tiny,", "hub: me/tiny,"), ["variant 'tiny'", "field 'weights.first.hub'"]),
    (GOOD.replace("top1: 50.5", "top1: 150"), ["field 'weights.first.top1'", "percentage"]),
    (GOOD.replace("    input: {img_size: 32, ", "    input: {"), ["field 'input'", "img_size is required"]),
    (GOOD.replace("aliases: [t]", "alias: [t]"), ["variant 'tiny'", "field 'alias'", "did you mean 'aliases'"]),
])
def test_bad_files_name_file_variant_and_field(tmp_path, text, expected):
    with pytest.raises(RegistryError) as err:
        load(tmp_path, text)
    for part in expected:
        assert part in str(err.value), (part, str(err.value))


def test_duplicate_across_files(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(textwrap.dedent(GOOD))
    b = tmp_path / "b.yaml"
    b.write_text(textwrap.dedent(GOOD).replace("aliases: [t]", "aliases: [t2]"))
    reg = Registry(builtin_files=[a, b], plugins=False)
    reg.register_family("vit", VisionTransformer)
    with pytest.raises(RegistryError, match=r"b\.yaml: variant 'tiny', field 'name': duplicate name 'tiny', "
                                            r"already taken by variant 'tiny' in .*a\.yaml"):
        reg.ensure_loaded()


def test_register_family_refuses_replacement():
    reg = Registry(plugins=False)
    reg.register_family("vit", VisionTransformer)
    reg.register_family("vit", VisionTransformer)  # same builder again: harmless
    with pytest.raises(RegistryError, match="family 'vit' is already registered by zoo.models.vit.VisionTransformer"):
        reg.register_family("vit", torch.nn.Linear)
    with pytest.raises(RegistryError, match="lower-case"):
        reg.register_family("Bad Name", torch.nn.Linear)


def test_every_timm_weight_tag_has_timms_input_config():
    """Each weight tag stored in one of timm's Hub repos preprocesses as timm's pretrained_cfg says: input
    size, mean, std, crop_pct, interpolation (e.g. DINOv3's sat493m weights have satellite statistics)."""
    from timm.models import get_pretrained_cfg

    checked = 0
    for name in zoo.list_models():
        variant = zoo.model_info(name)
        for tag, weight in variant.weights.items():
            if not (weight.hf_hub_id or "").startswith("timm/"):
                continue
            cfg = get_pretrained_cfg(weight.hf_hub_id[len("timm/"):])
            assert cfg is not None, f"{name}.{tag}: timm has no pretrained config {weight.hf_hub_id}"
            inp = weight.input or variant.input
            assert tuple(inp.img_size) == tuple(cfg.input_size[1:]), f"{name}.{tag}"
            assert inp.mean == pytest.approx(cfg.mean, abs=1e-3) and inp.std == pytest.approx(cfg.std, abs=1e-3), tag
            assert (inp.crop_pct, inp.interpolation) == (cfg.crop_pct, cfg.interpolation), f"{name}.{tag}"
            checked += 1
    assert checked > 60
