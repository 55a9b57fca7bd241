"""ONNX export (`zoo export --format onnx`, `save_pretrained(format="onnx")`): the file runs in ONNX
Runtime with PyTorch's outputs (within 1e-4) at two sizes: another batch, and for models that take
any size another height and width too (DINOv2 positions resampled in the graph, DINOv3's RoPE
computed in it); Swin at its input size; an MAE exports its encoder (a ViT as above)."""
import json

import onnx
import pytest

import zoo
from conftest import randomize_
from zoo.cli import main
from zoo.weights.onnx import ONNX_NAME, check_onnx, dynamic_sizes, exported_module

CASES = {  # small models: the exporter traces every stage, seconds each
    "vit_small_patch14_reg4_dinov2": dict(depth=2, img_size=56, dynamic_img_size=True),
    "swin_tiny_patch4_window7_224": dict(img_size=32, window_size=4, depths=(1, 2), embed_dim=24, num_heads=(1, 2)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_matches_pytorch_at_two_sizes(name, tmp_path):
    model = randomize_(zoo.create(name, **CASES[name])).eval()
    zoo.save_pretrained(model, tmp_path, format="onnx")
    graph = onnx.load(str(tmp_path / ONNX_NAME)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    h, w = model.zoo_config["input"]["img_size"]
    if dynamic_sizes(model):  # batch, height and width are symbols
        assert all(isinstance(d, str) for d in (dims[0], dims[2], dims[3])), dims
        p = model.patch_embed.patch_size[0]
        sizes = [(2, h, w), (3, h + 2 * p, w + p)]
    else:  # batch only
        assert isinstance(dims[0], str) and dims[1:] == [3, h, w], dims
        sizes = [(2, h, w), (5, h, w)]
    assert dynamic_sizes(model) == (name == "vit_small_patch14_reg4_dinov2")
    assert max(check_onnx(tmp_path / ONNX_NAME, model, sizes)) < 1e-4
    # the folder is also a zoo folder: same weights, same config
    assert json.loads((tmp_path / "config.json").read_text())["format"] == "zoo"
    reloaded = zoo.create(str(tmp_path)).zoo_config["args"]
    assert json.dumps(reloaded, sort_keys=True) == json.dumps(model.zoo_config["args"], sort_keys=True)


def test_an_mae_exports_its_encoder():
    mae = zoo.create("mae_vit_base_patch16_dec512d8b", depth=1, img_size=32, embed_dim=64, num_heads=2,
                     decoder_depth=1, decoder_embed_dim=32, decoder_num_heads=2)
    assert exported_module(mae) is mae.encoder and not dynamic_sizes(mae)


def test_cli_exports_dinov3_with_dynamic_sizes(tmp_path, caplog):
    """`zoo export DIR --format onnx` on a DINOv3 model: RoPE computed in the graph, any multiple of 16."""
    model = randomize_(zoo.create("vit_small_patch16_dinov3", depth=2)).eval()
    zoo.save_pretrained(model, tmp_path / "saved")
    assert main(["export", str(tmp_path / "saved"), "--out", str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    assert "ONNX Runtime vs PyTorch, largest difference" in caplog.text  # the command checked its file
    assert dynamic_sizes(model)
    assert max(check_onnx(tmp_path / "onnx" / ONNX_NAME, model, [(1, 224, 224), (2, 320, 480)])) < 1e-4


def test_offset_resampling_exports_at_a_fixed_size_and_training_mode_is_kept(tmp_path):
    """The DINOv2 repository's "bicubic_offset" positions (scale factors a trace would fix) export with a
    dynamic batch only, and still match; the model comes back in the mode it was in."""
    model = randomize_(zoo.create("vit_small_patch14_dinov2", depth=1, img_size=42, dynamic_img_size=True,
                                  pos_embed_resample="bicubic_offset"))
    assert not dynamic_sizes(model) and model.training
    zoo.save_pretrained(model, tmp_path, format="onnx")
    assert model.training
    assert max(check_onnx(tmp_path / ONNX_NAME, model, [(2, 42, 42), (3, 42, 42)])) < 1e-4
