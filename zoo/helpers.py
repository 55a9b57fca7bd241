"""Small helpers shared across zoo. This module imports nothing from zoo (any module may use it)."""
from __future__ import annotations

from typing import Tuple, Union

IntOrPair = Union[int, Tuple[int, int]]


def to_2tuple(value: IntOrPair, name: str = "value") -> Tuple[int, int]:
    """`7 -> (7, 7)`; a pair is returned as a tuple. Anything else is a ValueError naming `name`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")


def encoder_of(model):
    """The image encoder of `model`: an MAE's ViT encoder (`model.encoder`; an MAE has `forward_encoder`),
    else the model itself. What the dense-feature and ONNX code run on (zoo/eval/attention.py, which may
    not import this module, makes the same choice)."""
    return model.encoder if hasattr(model, "forward_encoder") else model
