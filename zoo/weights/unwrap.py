"""Finding a model's weights inside what training code saved.

Research code rarely saves a bare state dict. MAE and Swin nest it under "model", DeiT adds
"model_ema", timm's train.py writes "state_dict" and "state_dict_ema", DINO saves
{"student": {"module.backbone.*", "module.head.*"}, "teacher": {"backbone.*", "head.*"}},
DINOv2's trainer {"model": {"teacher.backbone.*", "student.backbone.*", "teacher.dino_head.*"}},
DistributedDataParallel prefixes "module.", torch.compile "_orig_mod.", FSDP and activation
checkpointing "_fsdp_wrapped_module." / "_checkpoint_wrapped_module." (inside the key).

`unwrap_state_dict` handles every combination the same way: nested dicts are flattened to dotted
keys, the wrappers' infixes removed, and then the prefix under which the model's keys sit is found by
matching key suffixes against the keys the model (or its family) expects. Where several prefixes hold
a whole model (teacher and student, model and EMA), the teacher is taken by default (DINO family:
the teacher is the model that is evaluated and released), else the non-EMA weights (as timm's
`load_checkpoint`); `branch=` picks another.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

from .errors import CheckpointMismatchError

StateDict = Dict[str, torch.Tensor]

# Written inside keys by wrappers: FSDP (1), activation checkpointing, torch.compile.
WRAPPER_INFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def flatten(obj: Any, prefix: str = "") -> StateDict:
    """Nested dicts -> {dotted key: tensor}; leaves that are not tensors (epochs, configs) are dropped."""
    out: StateDict = {}
    if isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    return out


def largest_state_dict(obj: Any) -> List[str]:
    """The keys of the nested dict holding the most tensors directly: anchors for a reader that names
    none (then that dict is taken whole)."""
    best: List[str] = []

    def visit(node: Any) -> None:
        nonlocal best
        if isinstance(node, dict):
            keys = [k for k, v in node.items() if isinstance(v, torch.Tensor)]
            if len(keys) > len(best):
                best = [str(k) for k in keys]
            for value in node.values():
                visit(value)

    visit(obj)
    return [_clean(k) for k in best]


def _clean(key: str) -> str:
    for infix in WRAPPER_INFIXES:
        key = key.replace(infix, "")
    return key


def _segments(prefix: str) -> List[str]:
    return [s for s in prefix.split(".") if s]


def _is_ema(prefix: str) -> bool:
    return any("ema" in segment.split("_") for segment in _segments(prefix))


def _matches_branch(prefix: str, branch: str) -> bool:
    """`branch` names a part of the checkpoint: a prefix segment ("teacher", "student", "model_ema"),
    "ema" for any EMA copy, or a whole prefix ending in '.' ("model.teacher.backbone.")."""
    if branch.endswith("."):
        return prefix == branch
    return branch in _segments(prefix) or (branch == "ema" and _is_ema(prefix))


def candidate_prefixes(keys: Iterable[str], expected: Iterable[str]) -> Dict[str, int]:
    """{prefix: how many expected keys appear under it} for every prefix P with P + k among `keys` for
    some expected key k (a suffix match at a '.' boundary; P is '' or ends with '.')."""
    expected = set(expected)
    counts: Dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in expected:
                prefix = "".join(p + "." for p in parts[:i])
                counts[prefix] = counts.get(prefix, 0) + 1
    return counts


def unwrap_state_dict(obj: Any, expected: Iterable[str], branch: Optional[str] = None,
                      what: str = "the checkpoint") -> Tuple[StateDict, List[str], str]:
    """The model's state dict inside `obj` (a state dict or a training checkpoint, any nesting), a
    note per change and the prefix it was found under ('' for none), for a model whose state-dict keys
    are `expected` (or a few anchor keys, such as "patch_embed.proj.weight", when the model is not
    built yet).

    Keys under the chosen prefix are kept with the prefix removed; everything else (heads of the
    self-supervised wrapper, optimizer state, the other branch) is dropped and counted in the note.
    Raises CheckpointMismatchError when no prefix holds any expected key (naming the top-level keys
    and prefixes seen), when `branch` matches none of the candidates, or when several candidates remain
    and nothing says which to take (naming them and `branch=`).
    """
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f"{what}: expected a state dict or a dict holding one, got {type(obj).__name__}")
    raw = flatten(obj)
    flat = {_clean(k): v for k, v in raw.items()}
    counts = candidate_prefixes(flat, expected)
    if not counts:
        raise CheckpointMismatchError(
            f"{what}: none of the model's keys (e.g. {sorted(expected)[:3]}) appears in it under any prefix. Top-level "
            f"keys: {_listing(k for k in obj)}; key prefixes: {_listing(_prefixes_seen(flat))}. It holds weights of "
            f"another architecture, or wraps them in a way zoo does not know: take the state dict out with torch and "
            f"save just that.")
    best = max(counts.values())
    full = [p for p, n in counts.items() if n >= 0.5 * best]  # prefixes under which a (nearly) whole model sits
    if branch is not None:
        chosen = [p for p in full if _matches_branch(p, branch)]
        if not chosen:
            names = sorted({s for p in full for s in _segments(p)} - {"module", "backbone", "model", "_orig_mod"})
            raise CheckpointMismatchError(
                f"{what}: branch={branch!r} matches none of the weights it holds; they sit under "
                f"{_listing(repr(p) for p in full)}. Pass " + (f"one of {_listing(repr(n) for n in names)}, or "
                                                               if names else "") + "one of those prefixes.")
    else:
        teachers = [p for p in full if "teacher" in _segments(p)]
        chosen = teachers or [p for p in full if not _is_ema(p) and "student" not in _segments(p)] or full
    if len(chosen) > 1:
        raise CheckpointMismatchError(
            f"{what} holds the model's weights under several prefixes: {_listing(repr(p) for p in chosen)}. "
            f"Say which to load with branch= (Python: checkpoint_branch=; zoo convert: --branch).")
    prefix = chosen[0]
    out = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    notes = []
    if prefix:
        others = len(flat) - len(out)
        notes.append(f"took the {len(out)} tensors under {prefix!r}" + (f" and left {others} others "
                     f"(e.g. {_listing(_prefixes_seen({k: v for k, v in flat.items() if not k.startswith(prefix)}))})"
                     if others else ""))
    if any(any(i in k for i in WRAPPER_INFIXES) for k in raw):
        notes.append("removed the wrappers' key infixes (" + ", ".join(i[:-1] for i in WRAPPER_INFIXES) + ")")
    return out, notes, prefix


def written_by_training(prefix: str) -> bool:
    """Whether weights found under `prefix` (from `unwrap_state_dict`) came out of a training run's
    wrapper (DDP, a DINO-style teacher / student / backbone, an EMA copy) rather than a bare or
    "model"-nested release: such weights are someone's own run, not a published release."""
    return _is_ema(prefix) or bool({"module", "teacher", "student", "backbone"} & set(_segments(prefix)))


def _prefixes_seen(flat: Dict[str, Any], depth: int = 2) -> List[str]:
    seen: Dict[str, None] = {}
    for key in flat:
        parts = key.split(".")
        seen[".".join(parts[:min(depth, len(parts) - 1)]) + ".*" if len(parts) > 1 else key] = None
    return list(seen)


def _listing(items: Iterable[Any], limit: int = 8) -> str:
    items = list(items)
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(str(i) for i in items[:limit]) + more
