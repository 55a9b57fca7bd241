"""Reading weight and config files safely: safetensors only (never pickle), hashes checked.

safetensors has no checksum of its own: a sha256 recorded in registry.yaml is checked, and a file in
the Hugging Face cache must hash to its LFS blob's name. Truncation and header damage raise in the
safetensors reader and are reported as `CorruptWeightsError`.
"""
from __future__ import annotations

import hashlib
import json
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


def read_safetensors(path: Path, what: str, hint: str = "", header_only: bool = False) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU; with `header_only`, just check that it parses
    (the header must describe a file of exactly this size, so truncation shows) and return {}.
    Raises CorruptWeightsError."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        if header_only:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
            return {}
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
