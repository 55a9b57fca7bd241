"""torch.hub entry points for zoo: every registered variant and alias, as DINOv2 / DINOv3 users load
backbones, e.g. `torch.hub.load("<owner>/zoo", "dinov2_vitb14", pretrained=True)` or, from a
checkout, `torch.hub.load("path/to/zoo", "swin_t", source="local", num_classes=10)`. Each entry is
`zoo.create(name, pretrained=..., **kwargs)`; `torch.hub.list(...)` lists them.
"""
dependencies = ["torch", "timm", "safetensors", "huggingface_hub", "yaml"]

import zoo as _zoo  # noqa: E402  (torch.hub reads `dependencies` first)


def _entry(name: str):
    def load(pretrained=False, **kwargs):
        return _zoo.create(name, pretrained=pretrained, **kwargs)

    info = _zoo.model_info(name)
    load.__name__ = load.__qualname__ = name
    load.__doc__ = (f"{info.description or info.name}: zoo.create({name!r}, pretrained=False, **kwargs). "
                    f"pretrained=True loads the default weight tag ({info.default_tag or 'none'}) from the Hugging "
                    f"Face Hub, or pretrained='<tag>' another; keyword arguments override the variant's.")
    return load


for _name in _zoo.list_models():
    for _entry_name in (_name, *_zoo.model_info(_name).aliases):
        if _entry_name.isidentifier():
            globals()[_entry_name] = _entry(_entry_name)
