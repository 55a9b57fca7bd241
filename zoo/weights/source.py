"""Where weight files come from: a Hub repo at a revision (through the Hugging Face cache) or a folder.

`Source.fetch` returns a local path, downloaded with `huggingface_hub.hf_hub_download` when needed
(`HF_HUB_OFFLINE`, `HF_HOME` and `cache_dir` are honoured) and verified (`integrity.verify`). Missing
files raise errors that say how to get them; a repo holding only pickles raises UnsafeWeightsError.
"""
from __future__ import annotations

import functools
import os
import re
import socket
from pathlib import Path
from typing import List, Optional, Sequence, Union

from .errors import UnsafeWeightsError, WeightsNotCachedError, WeightsNotFoundError
from .integrity import verify

PathLike = Union[str, "os.PathLike[str]"]
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".pickle", ".ckpt")


class Source:
    """Where files come from: a Hub repo at a revision (through the Hugging Face cache) or a folder."""

    def __init__(self, repo_id: Optional[str] = None, revision: Optional[str] = None,
                 cache_dir: Optional[PathLike] = None, folder: Optional[PathLike] = None, hint: str = "") -> None:
        self.repo_id, self.revision, self.cache_dir = repo_id, revision, cache_dir
        self.folder = Path(folder).expanduser() if folder is not None else None
        self.hint = hint  # the `zoo download ...` command that fetches it

    @classmethod
    def parse(cls, ref: PathLike, revision: Optional[str], cache_dir: Optional[PathLike]) -> "Source":
        """`hf-hub:org/name[@revision]` or a folder."""
        text = os.fspath(ref)
        if not text.startswith("hf-hub:"):
            if revision is not None or cache_dir is not None:
                raise ValueError(f"{text}: revision= and cache_dir= apply to Hub repos, not to a folder")
            return cls(folder=text)
        repo_id, _, at = text[len("hf-hub:"):].partition("@")
        if revision is not None and at and revision != at:
            raise ValueError(f"conflicting revisions: {text!r} names {at!r} but revision={revision!r}")
        if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo_id):
            raise ValueError(f"{text!r}: expected 'hf-hub:org/name' or 'hf-hub:org/name@revision'")
        revision = at or revision
        hint = f"zoo download hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
        return cls(repo_id, revision, cache_dir, hint=hint)

    @property
    def label(self) -> str:
        """`hf-hub:org/name[@revision]`, or the folder's path."""
        if self.folder is not None:
            return str(self.folder)
        return f"hf-hub:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    def describe(self, filename: str) -> str:
        """How messages name one of its files: `hf-hub:org/name[@rev]/file` or a path."""
        return str(self.folder / filename) if self.folder is not None else f"{self.label}/{filename}"

    def fetch(self, filename: str, sha256: Optional[str] = None, force: bool = False) -> Path:
        """Local path of `filename`, downloaded if need be, verified (sha256, LFS blob name)."""
        try:
            path = self._local(filename) if self.folder is not None else self._download(filename, force)
        except (WeightsNotCachedError, WeightsNotFoundError) as e:
            if filename.endswith(".safetensors"):  # not cached: the Hub was unreachable, ask only the cache
                self._refuse_pickle_only(filename, online=not isinstance(e, WeightsNotCachedError))
            raise
        verify(path, sha256, self.describe(filename), self.hint)
        return path

    def fetch_optional(self, filename: str) -> Optional[Path]:
        """`fetch(filename)`, or None when the repo or folder does not have it (or it is not cached)."""
        try:
            return self.fetch(filename)
        except (WeightsNotCachedError, WeightsNotFoundError):
            return None

    def files(self, online: bool = True) -> List[str]:
        """The files the repo or folder has (for a Hub repo offline, or with `online=False`: those of the
        cached snapshot)."""
        if self.folder is not None:
            return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())
        from huggingface_hub import HfApi, constants

        if online and not constants.HF_HUB_OFFLINE and hub_resolves():
            try:
                return sorted(HfApi().list_repo_files(self.repo_id, revision=self.revision))
            except Exception:  # no connection: fall back to what the cache holds
                pass
        snapshot = self._cached_snapshot()
        if snapshot is None:
            return []
        return sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())

    def _local(self, filename: str) -> Path:
        if not self.folder.is_dir():
            raise WeightsNotFoundError(f"{self.folder}: no such folder")
        path = self.folder / filename
        if not path.is_file():
            raise WeightsNotFoundError(f"{self.folder} has no {filename} (it has: {listing(self.files())})")
        return path

    def _download(self, filename: str, force: bool) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                           RevisionNotFoundError)

        try:
            return Path(hf_hub_download(self.repo_id, filename, revision=self.revision, cache_dir=self.cache_dir,
                                        force_download=force, local_files_only=not hub_resolves()))
        except LocalEntryNotFoundError:  # before EntryNotFoundError, which it subclasses
            raise self._not_cached(filename) from None
        except EntryNotFoundError:
            raise WeightsNotFoundError(
                f"{self.label} has no file {filename!r} (it has: {listing(self.files())})") from None
        except RevisionNotFoundError:
            raise WeightsNotFoundError(f"{self.repo_id} has no revision {self.revision!r}") from None
        except RepositoryNotFoundError:
            raise WeightsNotFoundError(f"Hub repo {self.repo_id!r} does not exist, or is private or gated: check "
                                       f"the name, and log in (`hf auth login`) if you have access") from None

    def _cache_root(self) -> Path:
        from huggingface_hub import constants

        return Path(self.cache_dir or constants.HF_HUB_CACHE).expanduser().absolute()

    def _cached_snapshot(self) -> Optional[Path]:
        repo = self._cache_root() / ("models--" + self.repo_id.replace("/", "--"))
        revision = self.revision or "main"
        commit = revision
        if not re.fullmatch(r"[0-9a-f]{40}", revision):
            ref = repo / "refs" / revision
            commit = ref.read_text().strip() if ref.is_file() else ""
        snapshot = repo / "snapshots" / commit
        return snapshot if commit and snapshot.is_dir() else None

    def _not_cached(self, filename: str) -> WeightsNotCachedError:
        from huggingface_hub import constants

        cache = self._cache_root()
        if constants.HF_HUB_OFFLINE:
            why, last = "HF_HUB_OFFLINE=1 is set", "or, if this machine can reach the Hub, unset HF_HUB_OFFLINE"
        else:
            why = "the Hub cannot be reached"
            last = "set HF_HUB_OFFLINE=1 on a machine without a connection to fail at once instead of retrying"
        folder = "models--" + self.repo_id.replace("/", "--")
        return WeightsNotCachedError(
            f"{self.repo_id}: {filename} (revision {self.revision or 'main'}) is not in the Hugging Face cache "
            f"{cache} and {why}. To get it: on a machine with a connection run `{self.hint}`, then copy its "
            f"cache folder {folder} (under $HF_HOME/hub) into {cache}; {last}.")

    def _refuse_pickle_only(self, filename: str, online: bool = True) -> None:
        files = self.files(online)
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if pickles and not any(f.endswith(".safetensors") for f in files):
            raise UnsafeWeightsError(
                f"{self.label} has no {filename}, only pickled weights ({listing(pickles)}). zoo does not unpickle "
                f"files from the Hub or a folder: unpickling can run arbitrary code. If you trust the file, convert "
                f"it once on your machine (`zoo convert`, or torch.load(weights_only=True) + "
                f"safetensors.torch.save_file) and load the result.")


@functools.lru_cache(maxsize=1)
def hub_resolves() -> bool:
    """Whether the Hub's host name resolves (once per process). Without name resolution there is no
    connection, and huggingface_hub would retry each request for ~25 s before failing: zoo then reads
    the cache only and says so at once. Behind an HTTP(S) proxy the proxy resolves names: assumed yes."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
        return True
    except (OSError, UnicodeError):
        return False


def listing(files: Sequence[str], limit: int = 8) -> str:
    """A short listing of file names for messages."""
    if not files:
        return "no files"
    return ", ".join(files[:limit]) + (f", ... ({len(files)} files)" if len(files) > limit else "")
