"""Loading a state dict into a model: adapt what can be adapted, then a strict load.

What is adapted, and how, is logged (logger "zoo.weights") and recorded in the model's
`zoo_config["weights"]["adapted"]`; what cannot be adapted is refused with the keys listed.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..specs import Family
from .errors import CheckpointMismatchError, UnsafeWeightsError, WeightsNotFoundError
from .integrity import read_safetensors, verify
from .source import PICKLE_SUFFIXES, PathLike
from .unwrap import unwrap_state_dict

log = logging.getLogger("zoo.weights")


def checked_path(path: PathLike) -> Path:
    """A local .safetensors file to load weights from, as a Path. Refuses pickles
    (UnsafeWeightsError, naming `zoo convert`); raises WeightsNotFoundError; checks the file's hash when
    it lies in a Hub cache (CorruptWeightsError)."""
    path = Path(path).expanduser()
    if path.suffix in PICKLE_SUFFIXES:
        raise UnsafeWeightsError(
            f"{path}: zoo loads weights from safetensors files only; convert this pickle once, if you trust it: "
            f"`zoo convert --from SOURCE {path} --out DIR` for research releases (zoo convert --help lists them), "
            f"or safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')")
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint_path {path}: no such file")
    verify(path, None, str(path), "")  # checks the blob hash when the path points into a Hub cache
    return path


def load_file(model: nn.Module, path: PathLike, family: Family,
              source_args: Optional[Mapping[str, Any]] = None, branch: Optional[str] = None) -> nn.Module:
    """Load a local .safetensors file of zoo (timm) keys into `model`, unwrapped and adapted as
    `load_state_dict` does (`checked_path` says what is refused)."""
    path = checked_path(path)
    return load_state_dict(model, read_safetensors(path, str(path)), family, source_args, str(path), branch=branch)


def load_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor], family: Family,
                    source_args: Optional[Mapping[str, Any]], label: str, notes: Sequence[str] = (),
                    branch: Optional[str] = None, check_only: bool = False) -> nn.Module:
    """Adapt `state_dict` (zoo / timm keys) to `model`, of `family`, and load it strictly.

    Unwrapping first: keys under a wrapper's prefix ('module.', 'backbone.', 'teacher.', ...) are found
    and the prefix removed (`zoo.weights.unwrap`; `branch` picks teacher / student / EMA where the
    file holds several). Adapting: the family's `checkpoint_filter` first fits what depends on the family (older key
    layouts; ViT: positions for another img_size; Swin: bias tables for another window), then a head
    for another num_classes is dropped (the model keeps its freshly initialised one) and a patch
    projection for another in_chans is summed or repeated. `source_args` are the builder arguments
    the weights were made for (None: unknown). Each change is logged on "zoo.weights" and kept in
    `model.zoo_config["weights"]`. Anything that still does not fit (a key, a shape, a floating-point
    tensor where the model has an integer one or the reverse) raises CheckpointMismatchError listing the
    keys. With `check_only`, nothing is loaded: `model` and `state_dict` may be on the meta device (the
    factory checks a file's header against a meta model before allocating anything).
    """
    own = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in own.items()}
    state_dict, unwrapped, _ = unwrap_state_dict(state_dict, expected, branch, label)
    notes = list(notes) + unwrapped
    if family.checkpoint_filter is not None:
        state_dict, filtered = family.checkpoint_filter(state_dict, model,
                                                        dict(source_args) if source_args is not None else None)
        notes += filtered
    head_notes, fresh = _adapt_classifier(model, family.classifier, state_dict, expected, source_args)
    notes += head_notes
    notes += _adapt_first_conv(family.first_conv, state_dict, expected)
    _check_keys(model, state_dict, expected, fresh, label)
    _check_kinds(state_dict, own, label)
    if check_only:
        return model
    state_dict.update({k: own[k] for k in fresh})  # the new head keeps its initialisation
    model.load_state_dict(state_dict, strict=True)
    for note in notes:
        log.info("%s: %s", label, note)
    if isinstance(getattr(model, "zoo_config", None), dict):
        model.zoo_config["weights"] = {"source": label, "adapted": notes}
    return model


def _adapt_classifier(model: nn.Module, classifier: Sequence[str], sd: Dict[str, torch.Tensor],
                      expected: Mapping[str, Tuple[int, ...]],
                      source_args: Optional[Mapping[str, Any]]) -> Tuple[List[str], List[str]]:
    """Drop classifier weights made for another num_classes. Returns (notes, model keys left fresh)."""
    wanted = getattr(model, "num_classes", None)
    made_for = None if source_args is None else source_args.get("num_classes")
    if made_for is not None and made_for == wanted:
        return [], []  # same head: any mismatch is a real one, for the strict check to report
    dropped, fresh, old = [], [], None
    for prefix in classifier:
        weight, bias = f"{prefix}.weight", f"{prefix}.bias"
        if weight in sd and (weight not in expected or tuple(sd[weight].shape) != expected[weight]):
            old = sd.pop(weight).shape[0]
            sd.pop(bias, None)
            dropped.append(prefix)
        if weight in expected and weight not in sd:
            fresh += [k for k in (weight, bias) if k in expected]
    if not dropped and not fresh:
        return [], []
    names = ", ".join(dropped or sorted({k.rsplit(".", 1)[0] for k in fresh}))
    if not dropped:
        note = f"the checkpoint has no classifier: new {wanted}-class head initialised ({names})"
    elif fresh:
        note = f"dropped the {old}-class head ({names}), new {wanted}-class head initialised"
    else:
        note = f"dropped the {old}-class head ({names}): num_classes={wanted}, the model returns features"
    return [note], fresh


def _adapt_first_conv(name: Optional[str], sd: Dict[str, torch.Tensor],
                      expected: Mapping[str, Tuple[int, ...]]) -> List[str]:
    """Patch projection made for another number of input channels: summed to 1 channel, or repeated
    cyclically and scaled so that the response to a grey image is unchanged."""
    key = f"{name}.weight"
    if name is None or key not in sd or key not in expected:
        return []
    w, want = sd[key], expected[key]
    if w.ndim != 4 or len(want) != 4 or w.shape[1] == want[1] or (w.shape[0], *w.shape[2:]) != (want[0], *want[2:]):
        return []
    old, new = w.shape[1], want[1]
    if new == 1:
        adapted, how = w.float().sum(dim=1, keepdim=True), "summed over the input channels"
    else:
        adapted = w.float().repeat(1, math.ceil(new / old), 1, 1)[:, :new] * (old / new)
        how = f"repeated and scaled by {old}/{new}"
    sd[key] = adapted.to(w.dtype)
    return [f"adapted {name} from {old} to {new} input channels ({how})"]


def _check_keys(model: nn.Module, sd: Mapping[str, torch.Tensor], expected: Mapping[str, Tuple[int, ...]],
                fresh: Iterable[str], label: str) -> None:
    fresh = set(fresh)
    missing = [k for k in expected if k not in sd and k not in fresh]
    unexpected = [k for k in sd if k not in expected]
    reshaped = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {expected[k]}"
                for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if not (missing or unexpected or reshaped):
        return
    cfg = getattr(model, "zoo_config", {}) or {}
    what = cfg.get("name") or cfg.get("family") or type(model).__name__
    lines = [f"{label} does not fit the model {what}:"]
    for title, keys in (("missing", missing), ("unexpected", unexpected)):
        lines.append(f"  {len(keys)} {title} key{'s' * (len(keys) != 1)}" + (f": {_summarise(keys)}" if keys else ""))
    lines.append(f"  {len(reshaped)} with another shape" + (f": {'; '.join(reshaped[:8])}" if reshaped else "")
                 + (f"; ... and {len(reshaped) - 8} more" if len(reshaped) > 8 else ""))
    lines.append("The weights were made for another architecture: build the one they were made for (same depth, "
                 "width, heads, tokens), or check that the file belongs to this model.")
    raise CheckpointMismatchError("\n".join(lines))


def _check_kinds(sd: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], label: str) -> None:
    """Floating-point values for floating-point parameters, integers for integer buffers (a float32 or
    bf16 file loads into a model of another float dtype: the values are cast)."""
    wrong = [f"{k}: checkpoint {sd[k].dtype} vs model {own[k].dtype}" for k in own
             if k in sd and sd[k].is_floating_point() != own[k].is_floating_point()]
    if wrong:
        raise CheckpointMismatchError(f"{label}: {len(wrong)} tensor{'s' * (len(wrong) > 1)} of another kind "
                                      f"(integers where the model has floating point, or the reverse): "
                                      f"{'; '.join(wrong[:5])}. The file was made for another model, or its tensors "
                                      f"were converted to the wrong dtype; check which model wrote it.")


def _summarise(keys: Sequence[str], limit: int = 10) -> str:
    """Keys listed briefly: those of one numbered block grouped (`blocks.3.* (12 keys)`), at most `limit` items."""
    groups: Dict[str, List[str]] = {}
    for key in keys:
        m = re.match(r"^(.*?\.\d+)\.", key)
        groups.setdefault(m.group(1) + ".*" if m else key, []).append(key)
    items = [g if len(ks) == 1 and g == ks[0] else (ks[0] if len(ks) == 1 else f"{g} ({len(ks)} keys)")
             for g, ks in groups.items()]
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
