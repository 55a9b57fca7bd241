"""Reading weight and config files safely: safetensors only (never pickle), hashes checked.

safetensors has no checksum of its own: a sha256 recorded in registry.yaml is checked, and a file in
the Hugging Face cache must hash to its LFS blob's name. Truncation and header damage raise in the
safetensors reader and are reported as `CorruptWeightsError`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .errors import CorruptWeightsError, RepoConfigError


def verify(path: Path, sha256: Optional[str], what: str, hint: str) -> None:
    """Check `path` against a recorded sha256 and, inside the Hub cache, against its LFS blob name
    (for LFS files the blob is named by the sha256 of its content). `what` names the file in the
    message, `hint` is the command that fetches it again. Raises CorruptWeightsError."""
    real = Path(os.path.realpath(path))
    blob = real.name if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name) else None
    if sha256 is None and blob is None:
        return
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    got = digest.hexdigest()
    for want, why in ((sha256, "registry.yaml records sha256"), (blob, "its Hub cache blob is named by sha256")):
        if want is not None and got != want:
            again = f"download it again with `{hint} --force` (it replaces the cached file)" if hint else \
                "replace it with an intact copy"
            raise CorruptWeightsError(
                f"{what} is corrupt: {why} {want}, but {real} ({real.stat().st_size:,} bytes) hashes to {got}; "
                f"{again}.")


# safetensors dtype names -> torch dtypes (the ones torch has)
SAFETENSORS_DTYPES = {name: getattr(torch, attr) for name, attr in (
    ("F64", "float64"), ("F32", "float32"), ("F16", "float16"), ("BF16", "bfloat16"), ("I64", "int64"),
    ("I32", "int32"), ("I16", "int16"), ("I8", "int8"), ("U64", "uint64"), ("U32", "uint32"), ("U16", "uint16"),
    ("U8", "uint8"), ("BOOL", "bool"), ("C64", "complex64"), ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E5M2", "float8_e5m2"), ("F8_E8M0", "float8_e8m0fnu")) if hasattr(torch, attr)}
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


def read_header(path: Path, what: str, hint: str = "") -> Dict[str, torch.Tensor]:
    """The tensors a safetensors file describes, as meta tensors (shape and dtype, no data), after
    checking its header without reading the data: an 8-byte little-endian length, a JSON object of
    {name: {dtype, shape, data_offsets}}, and byte ranges that lie inside the file, match each tensor's
    size and cover the data exactly. Raises CorruptWeightsError naming the first fault."""
    def bad(why: str) -> CorruptWeightsError:
        again = f" Download it again with `{hint} --force`." if hint else " Save or copy it again."
        return CorruptWeightsError(f"{what} ({size:,} bytes) is not a readable safetensors file, it is truncated or "
                                   f"damaged: {why}.{again}")

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n > min(MAX_HEADER_BYTES, size - 8):
            raise bad(f"its header length field says {n:,} bytes" if n >= 0 else "it is shorter than 8 bytes")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad(f"its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data_bytes, out, ranges = size - 8 - n, {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise bad(f"its entry for {name!r} is not a JSON object")
        dtype, shape, offsets = SAFETENSORS_DTYPES.get(entry.get("dtype")), entry.get("shape"), entry.get("data_offsets")
        if dtype is None and isinstance(entry.get("dtype"), str):
            raise CorruptWeightsError(f"{what}: tensor {name!r} is stored as {entry['dtype']}, which this torch "
                                      f"({torch.__version__}) cannot hold; zoo reads {', '.join(SAFETENSORS_DTYPES)}. "
                                      f"Save the weights in one of those.")
        if dtype is None or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise bad(f"tensor {name!r} has dtype {entry.get('dtype')!r} and "
                      f"shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise bad(f"tensor {name!r} claims bytes {offsets} of a {data_bytes:,}-byte data section")
        numel = math.prod(shape)
        if offsets[1] - offsets[0] != numel * dtype.itemsize:
            raise bad(f"tensor {name!r} of shape {shape} ({dtype}) needs {numel * dtype.itemsize:,} bytes but its "
                      f"range holds {offsets[1] - offsets[0]:,}")
        ranges.append(offsets)
        out[name] = torch.empty(shape, dtype=dtype, device="meta")
    end = 0
    for start, stop in sorted(ranges):
        if start != end:
            raise bad(f"its tensors' byte ranges {'overlap' if start < end else 'leave a gap'} at byte {min(start, end):,}")
        end = stop
    if end != data_bytes:
        raise bad(f"its tensors end at byte {end:,} of a {data_bytes:,}-byte data section")
    return out


def read_safetensors(path: Path, what: str, hint: str = "") -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU, after `read_header` has checked it.
    Raises CorruptWeightsError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_header(path, what, hint)
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        again = f" Download it again with `{hint} --force`." if hint else " Save or copy it again."
        raise CorruptWeightsError(f"{what} ({path.stat().st_size:,} bytes) is not a readable safetensors file, "
                                  f"it is truncated or damaged: {e}.{again}") from None


def read_json(path: Path, what: str) -> Dict[str, Any]:
    """A JSON object from `path`. Raises RepoConfigError for unreadable JSON or a non-object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RepoConfigError(f"{what}: not a readable JSON file: {e}") from None
    if not isinstance(data, dict):
        raise RepoConfigError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data
