"""Every method that builds or replaces parameters keeps the model's dtype and device: heads
(`reset_classifier`), `set_input_size`, and the adaptations made while loading weights (another
num_classes, img_size or in_chans), in float64, bfloat16, float16 and on the meta device."""
import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.weights import adapt

from conftest import builtin_family

TINY = {  # name -> overrides: one of each head / token layout, tiny widths
    "vit_base_patch16_224": dict(depth=1, embed_dim=32, num_heads=2, img_size=32),
    "deit_small_distilled_patch16_224": dict(depth=1, embed_dim=32, num_heads=2, img_size=32),
    "vit_small_patch14_reg4_dinov2": dict(depth=1, embed_dim=32, num_heads=2, img_size=28),
    "swin_tiny_patch4_window7_224": dict(depths=(1, 1), num_heads=(1, 2), embed_dim=16, img_size=56),
}
DTYPES = (torch.float64, torch.bfloat16, torch.float16)
pytestmark = pytest.mark.filterwarnings("ignore::zoo.SlowPrecisionWarning")  # fp16/bf16 may be emulated here


def tiny(name, **extra):
    return zoo.create(name, **{**TINY[name], **extra})


def assert_all(model, dtype, device="cpu"):
    wrong = [(n, p.dtype, p.device.type) for n, p in model.named_parameters()
             if p.dtype != dtype or p.device.type != device]
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reset_classifier_keeps_dtype(name, dtype):
    model = tiny(name).to(dtype).eval()
    model.reset_classifier(7)
    assert_all(model, dtype)
    size = model.zoo_config["input"]["img_size"]
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size, dtype=dtype))
    assert out.shape == (2, 7) and out.dtype == dtype and torch.isfinite(out).all()
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("name", list(TINY))
def test_methods_on_the_meta_device_stay_there(name):
    with torch.device("meta"):
        model = tiny(name)
    model.reset_classifier(5)
    if hasattr(model, "set_input_size"):
        model.set_input_size(64 if "swin" in name else 2 * TINY[name]["img_size"])
    assert_all(model, torch.float32, "meta")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_set_input_size_keeps_dtype(dtype):
    model = tiny("vit_base_patch16_224").to(dtype)
    before = model.pos_embed.detach().clone()
    model.set_input_size(48)
    assert model.pos_embed.dtype == dtype and model.pos_embed.shape[1] == 1 + 9
    model.set_input_size(32)  # back to the original grid: close to the original values
    assert torch.allclose(model.pos_embed.float(), before.float(), atol=0.05)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32, dtype=dtype)).dtype == dtype


def test_float64_resampling_is_computed_in_float64():
    from zoo.layers import resample_pos_embed

    pos = torch.randn(1, 16, 8, dtype=torch.float64)
    out = resample_pos_embed(pos, (6, 6), (4, 4))
    ref = resample_pos_embed(pos.float(), (6, 6), (4, 4))
    assert out.dtype == torch.float64
    assert 0 < (out - ref.double()).abs().max() < 1e-5  # same values, without float32 rounding


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_loading_adapted_weights_keeps_the_model_dtype(name, dtype, tmp_path):
    """Weights in float32 made for another num_classes, img_size and in_chans, loaded into a model that
    was cast to `dtype`: the adapted head, positions and patch projection arrive in `dtype`."""
    source = tiny(name, num_classes=10, in_chans=3)
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    size = TINY[name]["img_size"] * 2
    model = tiny(name, num_classes=4, img_size=size, in_chans=1).to(dtype)
    adapt.load_file(model, path, builtin_family(name.split("_")[0] if "swin" in name else "vit"),
                    source.zoo_config["args"])
    assert_all(model, dtype)
    notes = " | ".join(model.zoo_config["weights"]["adapted"])
    assert "dropped the 10-class head" in notes and "from 3 to 1 input channels" in notes
    assert ("resampled pos_embed" in notes) == ("swin" not in name)  # Swin has no grid of positions
    with torch.no_grad():
        out = model(torch.randn(1, 1, size, size, dtype=dtype))
    assert out.shape == (1, 4) and out.dtype == dtype and torch.isfinite(out).all()
