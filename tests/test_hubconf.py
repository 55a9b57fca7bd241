"""hubconf.py: `torch.hub.load(<checkout>, name, source="local")` builds every registered variant and
alias, as DINOv2 users load backbones. (torch.hub.list / help read GitHub repos only: the entry points
are listed here the way they do it, from the module's public callables.)"""
import importlib.util
from pathlib import Path

import torch

import zoo

ROOT = Path(__file__).resolve().parents[1]


def test_torch_hub_loads_every_variant_and_alias():
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    for name in zoo.list_models():
        assert name in entries and set(zoo.model_info(name).aliases) <= entries, name
    assert hubconf.dinov2_vits14.__doc__.startswith("DINOv2 ViT-S/14") and hubconf.dinov2_vits14.__name__ == "dinov2_vits14"
    model = torch.hub.load(str(ROOT), "dinov2_vits14", source="local", depth=1, img_size=28)
    assert type(model).__name__ == "VisionTransformer" and model.zoo_config["name"] == "vit_small_patch14_dinov2"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 28, 28)).shape == (1, 384)
    swin = torch.hub.load(str(ROOT), "swin_t", source="local", depths=(1, 1, 1, 1), num_classes=3)
    assert swin.num_classes == 3
