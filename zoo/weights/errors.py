"""The errors of the weights code. Each message names the repo or folder, the file and what to do."""
from __future__ import annotations


class WeightsError(Exception):
    """Base class of the errors below."""


class WeightsNotCachedError(WeightsError, FileNotFoundError):
    """The file is not in the local Hugging Face cache and the Hub cannot be reached (or HF_HUB_OFFLINE=1)."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """The repo, revision or folder does not have the file."""


class CorruptWeightsError(WeightsError, ValueError):
    """A weights file is truncated, damaged, or does not hash to its recorded sha256."""


class UnsafeWeightsError(WeightsError, ValueError):
    """The weights exist only as pickle (.bin, .pth, ...), which zoo does not load from the Hub or a folder."""


class CheckpointMismatchError(WeightsError, RuntimeError):
    """The state dict does not fit the model: missing keys, unexpected keys or other shapes."""


class RepoConfigError(WeightsError, ValueError):
    """A config.json zoo cannot accept: unknown family or arguments, unsupported format."""
