"""A Hugging Face Hub cache laid out on disk exactly as huggingface_hub leaves it after a download, so
that tests run the real `hf_hub_download` offline:

    <cache>/models--<org>--<name>/
        blobs/<etag>                       file contents; LFS files are named by their sha256,
                                           regular git files by their git blob sha1
        refs/<revision>                    the commit hash the revision points to
        snapshots/<commit>/<filename>      relative symlink to ../../blobs/<etag>
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping, Optional, Union

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


def etag(name: str, data: bytes) -> str:
    """What the Hub reports as the file's ETag: sha256 for LFS files, the git blob sha1 otherwise."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_cache(cache_dir: Union[str, Path], repo_id: str, files: Mapping[str, Union[bytes, Path]],
                 revision: str = "main", commit: Optional[str] = None) -> Path:
    """Put `files` (name -> bytes, or a path to copy) into the cache as `repo_id` at `revision`.
    Returns the snapshot folder."""
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        data = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
        blob = repo / "blobs" / etag(name, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def add_folder_to_cache(cache_dir: Union[str, Path], repo_id: str, folder: Union[str, Path], **kwargs) -> Path:
    """Every file of `folder` (e.g. one written by save_pretrained) into the cache as `repo_id`."""
    folder = Path(folder)
    return add_to_cache(cache_dir, repo_id, {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}, **kwargs)

