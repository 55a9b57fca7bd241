"""Uploading a saved folder to the Hugging Face Hub, with huggingface_hub's own client."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from ..version import __version__
from .integrity import read_header, read_json
from .source import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, PathLike, Source

log = logging.getLogger("zoo.weights")


def push_folder(folder: PathLike, repo_id: str, private: Optional[bool] = None, revision: Optional[str] = None,
                commit_message: Optional[str] = None, token: Optional[str] = None):
    """Upload a folder written by `save_pretrained` (its model.safetensors, config.json, README.md) to
    `repo_id`: `HfApi.create_repo` (exist_ok), a branch for `revision` if needed, `HfApi.upload_folder`.
    The files are checked first (config.json readable, weights not truncated), so nothing broken is
    uploaded (`zoo.factory.push_folder` also checks the config against the registry). Returns
    huggingface_hub's CommitInfo."""
    from huggingface_hub import HfApi

    folder = Path(folder).expanduser()
    source = Source(folder=folder)
    config = read_json(source.fetch(CONFIG_NAME), source.describe(CONFIG_NAME))
    read_header(source.fetch(WEIGHTS_NAME), source.describe(WEIGHTS_NAME))  # not a broken file
    files = [f for f in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME) if (folder / f).is_file()]
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    name = config.get("variant") or config.get("architecture") or config.get("family")
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision, allow_patterns=files,
                             commit_message=commit_message or f"Upload {name} with zoo {__version__}")
    log.info("pushed %s to %s", ", ".join(files), getattr(info, "commit_url", repo_id))
    return info
