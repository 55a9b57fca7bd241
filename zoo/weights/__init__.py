"""Weights: where files come from, their integrity, the configs of each origin, adapting and loading
state dicts, saving, model cards, pushing, and reading research pickles. One job a module:

    source.py     Hub repo (through the Hugging Face cache) or folder -> local, verified files
    integrity.py  safetensors / JSON readers; sha256 and LFS-blob checks
    origins.py    config.json of zoo, timm or transformers -> family, arguments, input config
    unwrap.py     the model's state dict inside a training checkpoint (any nesting, wrapper prefixes)
    adapt.py      a state dict into a model: the family's checkpoint filter, head, channels, strict load
    save.py       model.safetensors + config.json (zoo's or timm's) + card.py's README.md
    push.py       a saved folder -> the Hub
    research.py   .pth research releases, through torch.load(weights_only=True) only

This package knows nothing of the registry: what it needs of it (families, variants) is passed in.
`zoo.factory` joins the two.
"""
from .errors import (
    CheckpointMismatchError, CorruptWeightsError, RepoConfigError, UnsafeWeightsError, WeightsError,
    WeightsNotCachedError, WeightsNotFoundError)

__all__ = [
    "CheckpointMismatchError", "CorruptWeightsError", "RepoConfigError", "UnsafeWeightsError", "WeightsError",
    "WeightsNotCachedError", "WeightsNotFoundError",
]
