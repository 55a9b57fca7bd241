"""Weights: load from the Hugging Face Hub or a folder, save, push, convert.

    model = zoo.create("deit_s", pretrained=True)         # registry tag -> Hub -> strict load
    model = zoo.create("hf-hub:me/deit-s-pets@v1")         # a repo written by zoo.save_pretrained
    model = zoo.create("runs/deit-s-pets")                 # the same folder on disk
    zoo.save_pretrained(model, "runs/deit-s-pets")        # model.safetensors, config.json, README.md
    zoo.push_to_hub(model, "me/deit-s-pets", private=True)

A repo or folder may also be a timm repo (config.json with `architecture`, a zoo variant) or a
transformers repo of a supported family (`model_type`; see zoo/convert.py).

Safety: files from the Hub, or from a folder, are read with safetensors only, never unpickled; a
config.json can name only a registered family and arguments its builder accepts, so no downloaded
file can make zoo import or run code. Integrity: a sha256 recorded in registry.yaml is checked, and a
file stored as LFS in the Hub cache must hash to its blob's name.

Loading adapts weights made for another num_classes (head dropped, a new one initialised), img_size
(positions resampled by the family's `adapt_state_dict`) or in_chans (patch projection adapted). Each
change is logged at INFO level on the "zoo.hub" logger and kept in `model.zoo_config["weights"]`.
See docs/hub.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import yaml
from torch import nn

from . import __version__, convert
from .complexity import count_macs, count_params
from .registry import REGISTRY, InputConfig, UnknownModelError, WeightTag, _parse_input, is_repo_reference

log = logging.getLogger("zoo.hub")

PathLike = Union[str, "os.PathLike[str]"]
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".pickle", ".ckpt")
SAVE_FORMATS = ("zoo", "timm")


class WeightsError(Exception):
    """Base class of the errors below; each message names the repo or folder, the file and what to do."""


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


# ======================================================================================== sources
class _Source:
    """Where files come from: a Hub repo at a revision (through the Hugging Face cache) or a folder."""

    def __init__(self, repo_id: Optional[str] = None, revision: Optional[str] = None,
                 cache_dir: Optional[PathLike] = None, folder: Optional[PathLike] = None, hint: str = "") -> None:
        self.repo_id, self.revision, self.cache_dir = repo_id, revision, cache_dir
        self.folder = Path(folder).expanduser() if folder is not None else None
        self.hint = hint  # the `zoo download ...` command that fetches it

    @classmethod
    def parse(cls, ref: PathLike, revision: Optional[str], cache_dir: Optional[PathLike]) -> "_Source":
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
        except (WeightsNotCachedError, WeightsNotFoundError):
            if filename.endswith(".safetensors"):
                self._refuse_pickle_only(filename)
            raise
        _verify(path, sha256, self.describe(filename), self.hint)
        return path

    def fetch_optional(self, filename: str) -> Optional[Path]:
        try:
            return self.fetch(filename)
        except (WeightsNotCachedError, WeightsNotFoundError):
            return None

    def files(self) -> List[str]:
        """The files the repo or folder has (for a Hub repo offline: those of the cached snapshot)."""
        if self.folder is not None:
            return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())
        from huggingface_hub import HfApi, constants

        if not constants.HF_HUB_OFFLINE:
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
            raise WeightsNotFoundError(f"{self.folder} has no {filename} (it has: {_listing(self.files())})")
        return path

    def _download(self, filename: str, force: bool) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                           RevisionNotFoundError)

        try:
            return Path(hf_hub_download(self.repo_id, filename, revision=self.revision, cache_dir=self.cache_dir,
                                        force_download=force))
        except LocalEntryNotFoundError:  # before EntryNotFoundError, which it subclasses
            raise self._not_cached(filename) from None
        except EntryNotFoundError:
            raise WeightsNotFoundError(
                f"{self.label} has no file {filename!r} (it has: {_listing(self.files())})") from None
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
        why = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        folder = "models--" + self.repo_id.replace("/", "--")
        return WeightsNotCachedError(
            f"{self.repo_id}: {filename} (revision {self.revision or 'main'}) is not in the Hugging Face cache "
            f"{cache} and {why}. To get it: on a machine with a connection run `{self.hint}`, then copy its "
            f"cache folder {folder} (under $HF_HOME/hub) into {cache}; or, if this machine can reach the Hub, "
            f"unset HF_HUB_OFFLINE.")

    def _refuse_pickle_only(self, filename: str) -> None:
        files = self.files()
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if pickles and not any(f.endswith(".safetensors") for f in files):
            raise UnsafeWeightsError(
                f"{self.label} has no {filename}, only pickled weights ({_listing(pickles)}). zoo does not unpickle "
                f"files from the Hub or a folder: unpickling can run arbitrary code. If you trust the file, convert "
                f"it once on your machine (`zoo convert`, or torch.load(weights_only=True) + "
                f"safetensors.torch.save_file) and load the result.")


def _verify(path: Path, sha256: Optional[str], what: str, hint: str) -> None:
    """Check `path` against a recorded sha256 and, inside the Hub cache, against its LFS blob name
    (for LFS files the blob is named by the sha256 of its content)."""
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


def _read_safetensors(path: Path, what: str, hint: str = "", header_only: bool = False) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file; with `header_only`, just check that it parses (the header
    must describe a file of exactly this size, so truncation shows) and return {}."""
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


def _read_json(path: Path, what: str) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RepoConfigError(f"{what}: not a readable JSON file: {e}") from None
    if not isinstance(data, dict):
        raise RepoConfigError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


# ====================================================================================== loading
def load_pretrained(model: nn.Module, weight: WeightTag, source_args: Mapping[str, Any],
                    revision: Optional[str] = None, cache_dir: Optional[PathLike] = None) -> nn.Module:
    """Load a registry weight tag into `model` (built by `zoo.create`): download, verify, adapt, strict load.
    `source_args` are the builder arguments of the architecture the weights were made for."""
    name = f"{model.zoo_config['name']}.{weight.tag}"
    source = _Source(weight.hf_hub_id, revision, cache_dir, hint=f"zoo download {name}")
    state_dict = _read_safetensors(source.fetch(weight.filename, weight.sha256), source.describe(weight.filename),
                                   source.hint)
    notes: List[str] = []
    if weight.format == "transformers":
        config = _read_json(source.fetch(CONFIG_NAME), source.describe(CONFIG_NAME))
        converted = _from_transformers(config, state_dict, source.describe(CONFIG_NAME))
        _require_family(converted.family, source.describe(CONFIG_NAME))
        state_dict, notes = converted.state_dict, converted.notes
    load_state_dict(model, state_dict, source_args, source.describe(weight.filename), notes)
    model.zoo_config["weights"].update(license=weight.license, metrics=_metrics(weight))
    return model


def load_checkpoint(model: nn.Module, path: PathLike, source_args: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Load a local .safetensors file of zoo (timm) keys into `model`, adapting it as `load_state_dict` does."""
    path = Path(path).expanduser()
    if path.suffix in PICKLE_SUFFIXES:
        raise UnsafeWeightsError(
            f"{path}: zoo loads weights from safetensors files only; convert this pickle once, if you trust it: "
            f"`zoo convert --from {'|'.join(sorted(convert.RESEARCH))} {path} --out DIR` for research releases, or "
            f"safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')")
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint_path {path}: no such file")
    _verify(path, None, str(path), "")  # checks the blob hash when the path points into a Hub cache
    return load_state_dict(model, _read_safetensors(path, str(path)), source_args, str(path))


def load_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor], source_args: Optional[Mapping[str, Any]],
                    label: str, notes: Sequence[str] = ()) -> nn.Module:
    """Adapt `state_dict` to `model` and load it strictly.

    Adapting: a head for another num_classes is dropped (the model keeps its freshly initialised
    one), a patch projection for another in_chans is summed or repeated, then the model's own
    `adapt_state_dict(state_dict, source_args)` hook, if it has one, fits what depends on its
    family (ViT: positions for another img_size; Swin: bias tables for another window). Anything that
    still does not fit raises CheckpointMismatchError listing the keys.
    """
    state_dict = dict(state_dict)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    notes = list(notes)
    head_notes, fresh = _adapt_classifier(model, state_dict, expected, source_args)
    notes += head_notes
    notes += _adapt_first_conv(model, state_dict, expected)
    hook = getattr(model, "adapt_state_dict", None)
    if hook is not None:
        notes += hook(state_dict, dict(source_args) if source_args is not None else None)
    _check_keys(model, state_dict, expected, fresh, label)
    own = model.state_dict()
    state_dict.update({k: own[k] for k in fresh})  # the new head keeps its initialisation
    model.load_state_dict(state_dict, strict=True)
    for note in notes:
        log.info("%s: %s", label, note)
    if isinstance(getattr(model, "zoo_config", None), dict):
        model.zoo_config["weights"] = {"source": label, "adapted": notes}
    return model


def _adapt_classifier(model: nn.Module, sd: Dict[str, torch.Tensor], expected: Mapping[str, Tuple[int, ...]],
                      source_args: Optional[Mapping[str, Any]]) -> Tuple[List[str], List[str]]:
    """Drop classifier weights made for another num_classes. Returns (notes, model keys left fresh)."""
    wanted = getattr(model, "num_classes", None)
    made_for = None if source_args is None else source_args.get("num_classes")
    if made_for is not None and made_for == wanted:
        return [], []  # same head: any mismatch is a real one, for the strict check to report
    dropped, fresh, old = [], [], None
    for prefix in getattr(model, "classifier", ()):
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


def _adapt_first_conv(model: nn.Module, sd: Dict[str, torch.Tensor],
                      expected: Mapping[str, Tuple[int, ...]]) -> List[str]:
    """Patch projection made for another number of input channels: summed to 1 channel, or repeated
    cyclically and scaled so that the response to a grey image is unchanged."""
    name = getattr(model, "first_conv", None)
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


# ================================================================================= saved models
def create_from_repo(ref: PathLike, num_classes: Optional[int] = None, img_size: Optional[Any] = None,
                     revision: Optional[str] = None, cache_dir: Optional[PathLike] = None,
                     **overrides: Any) -> nn.Module:
    """Build and load a saved model: `hf-hub:org/name[@revision]` or a folder, in zoo, timm or
    transformers format. What `zoo.create` calls for such names."""
    source = _Source.parse(ref, revision, cache_dir)
    what = source.describe(CONFIG_NAME)
    config = _read_json(source.fetch(CONFIG_NAME), what)
    # The config is checked before the weights are read: it may only name what zoo knows.
    if config.get("format") == "zoo" or config.get("library_name") == "zoo":
        fmt = "zoo"
        family, args, input_cfg, name, tag = _spec_from_zoo_config(config, what)
        metrics = config.get("metrics") if isinstance(config.get("metrics"), dict) else {}
        meta = {"license": config.get("license"),
                "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
    elif "architecture" in config:
        fmt = "timm"
        family, args, input_cfg, name, tag = _spec_from_timm_config(config, what)
        meta = {"license": (config.get("pretrained_cfg") or {}).get("license")}
    elif "model_type" in config:
        fmt, meta = "transformers", {}
    else:
        raise RepoConfigError(f"{what}: not a zoo, timm or transformers config (no 'family', 'architecture' or "
                              f"'model_type')")
    state_dict = _read_safetensors(source.fetch(WEIGHTS_NAME), source.describe(WEIGHTS_NAME), source.hint)
    notes: List[str] = []
    if fmt == "transformers":  # keys and builder arguments both come from the mapping in zoo/convert.py
        converted = _from_transformers(config, state_dict, what)
        _require_family(converted.family, what)
        family, args, name, tag = converted.family, converted.args, converted.variant, None
        state_dict, notes = converted.state_dict, converted.notes
        input_cfg = _transformers_input(source, args, name)
    model = REGISTRY.build(family, args, input_cfg, num_classes=num_classes, img_size=img_size, overrides=overrides,
                           name=name, tag=tag)
    load_state_dict(model, state_dict, REGISTRY.complete_args(family, args), source.describe(WEIGHTS_NAME), notes)
    model.zoo_config["weights"].update(meta)
    labels = config.get("label_names") if fmt == "zoo" else None
    if isinstance(labels, list) and len(labels) == getattr(model, "num_classes", -1):  # a new head has none
        model.zoo_config["label_names"] = [str(x) for x in labels]
    return model


def _spec_from_zoo_config(config: Mapping[str, Any], what: str):
    family = config.get("family")
    if not isinstance(family, str) or family not in REGISTRY.families:
        raise RepoConfigError(
            f"{what} names family {family!r}, which is not registered here (registered: "
            f"{', '.join(sorted(REGISTRY.families))}). zoo builds only registered families and never imports code "
            f"named by a downloaded file; if you trust the family's package, install it (it registers through "
            f"the zoo.plugins entry point) and load again.")
    args = config.get("args")
    if not isinstance(args, dict):
        raise RepoConfigError(f"{what}: 'args' must be a JSON object of builder arguments")
    unknown = REGISTRY.unknown_arg(family, args)
    if unknown is not None:
        raise RepoConfigError(f"{what}: {unknown[1]}")
    try:
        input_cfg = _parse_input(config.get("input") or {"img_size": args.get("img_size", 224)}, base=None)
    except ValueError as e:
        raise RepoConfigError(f"{what}: field 'input': {e}") from None
    name, tag = config.get("variant"), config.get("tag")
    return family, args, input_cfg, name if isinstance(name, str) else None, tag if isinstance(tag, str) else None


def _spec_from_timm_config(config: Mapping[str, Any], what: str):
    arch = config.get("architecture")
    try:
        variant = REGISTRY.model_info(arch)
    except UnknownModelError as e:
        raise RepoConfigError(f"{what}: timm architecture {arch!r} is not a zoo model: {e}") from None
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise RepoConfigError(f"{what}: 'model_args' must be a JSON object")
    unknown = REGISTRY.unknown_arg(variant.family, model_args)
    if unknown is not None:
        raise RepoConfigError(f"{what}: model_args: {unknown[1]}")
    pcfg = config.get("pretrained_cfg") or {}
    args = dict(variant.args, **model_args)
    args["num_classes"] = int(config.get("num_classes", pcfg.get("num_classes", variant.num_classes)))
    spec: Dict[str, Any] = {"img_size": list(pcfg.get("input_size", [3, *variant.input.img_size]))[1:]}
    spec.update({k: pcfg[k] for k in ("mean", "std", "crop_pct", "interpolation") if k in pcfg})
    try:
        input_cfg = _parse_input(spec, base=variant.input)
    except ValueError as e:
        raise RepoConfigError(f"{what}: pretrained_cfg: {e}") from None
    return variant.family, args, input_cfg, variant.name, pcfg.get("tag")


def _from_transformers(config: Mapping[str, Any], state_dict: Dict[str, torch.Tensor], label: str):
    try:
        return convert.from_transformers(config, state_dict)
    except convert.ConversionError as e:
        raise RepoConfigError(f"{label}: {e}") from None


def _require_family(family: str, what: str) -> None:
    if family not in REGISTRY.families:
        raise RepoConfigError(f"{what}: holds a {family!r} model, and family {family!r} is not registered in this "
                              f"zoo (registered: {', '.join(sorted(REGISTRY.families))})")


def _transformers_input(source: _Source, args: Mapping[str, Any], name: Optional[str]) -> InputConfig:
    """Input config of a transformers repo: the matching registry variant's (or ImageNet defaults) at
    the config's image size, with mean/std from preprocessor_config.json when the repo has one."""
    size = args["img_size"]
    base = REGISTRY.variants[name].input if name else InputConfig(img_size=(0, 0))
    spec: Dict[str, Any] = {"img_size": size}
    path = source.fetch_optional("preprocessor_config.json")
    if path is not None:
        pre = _read_json(path, source.describe("preprocessor_config.json"))
        spec.update({ours: pre[theirs] for ours, theirs in (("mean", "image_mean"), ("std", "image_std"))
                     if isinstance(pre.get(theirs), list) and len(pre[theirs]) == 3})
    return _parse_input(spec, base=base)


# ======================================================================================= saving
def save_pretrained(model: nn.Module, save_dir: PathLike, format: str = "zoo", license: Optional[str] = None,
                    metrics: Optional[Mapping[str, float]] = None, repo_id: Optional[str] = None) -> Path:
    """Write `model` to `save_dir`: model.safetensors, config.json and a README.md model card.

    `format="zoo"` (default) writes a config zoo reads back (`zoo.create(save_dir)`, or
    `zoo.create("hf-hub:...")` once pushed); `format="timm"` writes timm's config instead, so that
    `timm.create_model("local-dir:DIR", pretrained=True)` (or `hf-hub:`) loads it. `license` and
    `metrics` (e.g. {"top1": 81.2}) go into the card and config; by default they come from the weights
    the model was loaded from (metrics only when the architecture was not adapted). `repo_id` is used
    in the card's usage snippet. The model must come from `zoo.create` (it needs `model.zoo_config`).
    """
    if format not in SAVE_FORMATS:
        raise ValueError(f"format must be one of {SAVE_FORMATS}, got {format!r}")
    cfg = getattr(model, "zoo_config", None)
    if not isinstance(cfg, dict) or "family" not in cfg:
        raise ValueError(f"{type(model).__name__} has no zoo_config: build it with zoo.create(...) so that its family "
                         f"and arguments are known")
    args = _jsonable_args(cfg["args"])
    loaded = cfg.get("weights") or {}
    license = license or loaded.get("license")
    if metrics is None:
        metrics = {} if loaded.get("adapted") else dict(loaded.get("metrics") or {})
    save_dir = Path(save_dir).expanduser()
    save_dir.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(save_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    if format == "zoo":
        config = {
            "library_name": "zoo", "format": "zoo", "zoo_version": __version__, "family": cfg["family"],
            "variant": cfg.get("name"), "tag": cfg.get("tag"), "num_classes": args.get("num_classes"),
            "args": args, "input": cfg["input"], "license": license, "metrics": dict(metrics),
            "source": loaded.get("source"),
        }
        if cfg.get("label_names"):
            config["label_names"] = list(cfg["label_names"])
    else:
        config = _timm_config(model, cfg, args, license)
    (save_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (save_dir / CARD_NAME).write_text(_model_card(cfg, args, license, metrics, format, repo_id, save_dir),
                                      encoding="utf-8")
    log.info("saved %s to %s (%s format)", cfg.get("name") or cfg["family"], save_dir, format)
    return save_dir


def _jsonable_args(args: Mapping[str, Any]) -> Dict[str, Any]:
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
    for k, v in out.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            raise ValueError(f"argument {k}={v!r} cannot be written to config.json (JSON values only)") from None
    return out


# zoo arguments timm's constructor has no equivalent for: the timm architecture name sets them.
_ZOO_ONLY_ARGS = ("distilled", "mlp_layer", "norm_eps")


def _timm_config(model: nn.Module, cfg: Mapping[str, Any], args: Mapping[str, Any], license: Optional[str]):
    """timm's config.json: architecture (a timm model name), model_args that differ from it, pretrained_cfg."""
    import timm  # local import: only this export needs timm itself

    name = cfg.get("name")
    if not name or not timm.is_model(name):
        raise ValueError(f"format='timm' needs a model timm knows by name; {name!r} is not one")
    variant = REGISTRY.variants[name]
    base = REGISTRY.complete_args(variant.family, variant.args)
    model_args = {k: v for k, v in REGISTRY.complete_args(cfg["family"], args).items()
                  if _plain(base.get(k)) != _plain(v)}
    if model_args.get("pos_embed") == "sincos":
        del model_args["pos_embed"]  # a fixed table in zoo; timm loads the same values as a learned one
    clash = [k for k in model_args if k in _ZOO_ONLY_ARGS]
    if clash:
        raise ValueError(f"format='timm': {', '.join(f'{k}={model_args[k]!r}' for k in clash)} differs from timm's "
                         f"{name}, and timm's constructor has no such argument")
    inp = cfg["input"]
    state = model.state_dict()
    heads = [p for p in getattr(model, "classifier", ()) if f"{p}.weight" in state]
    pretrained_cfg = {
        "tag": cfg.get("tag"), "custom_load": False,
        "input_size": [args.get("in_chans", 3), *inp["img_size"]],
        "fixed_input_size": not args.get("dynamic_img_size", False),
        "interpolation": inp["interpolation"], "crop_pct": inp["crop_pct"], "crop_mode": "center",
        "mean": inp["mean"], "std": inp["std"], "num_classes": args.get("num_classes"),
        "first_conv": getattr(model, "first_conv", None),
        "classifier": heads[0] if len(heads) == 1 else (heads or None), "license": license,
    }
    config = {"architecture": name, "num_classes": args.get("num_classes"),
              "num_features": getattr(model, "num_features", None)}
    if "global_pool" in args:
        config["global_pool"] = args["global_pool"]
    if model_args:
        config["model_args"] = _jsonable_args(model_args)
    config["pretrained_cfg"] = {k: v for k, v in pretrained_cfg.items() if v is not None}
    return config


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _model_card(cfg: Mapping[str, Any], args: Mapping[str, Any], license: Optional[str],
                metrics: Mapping[str, float], format: str, repo_id: Optional[str], save_dir: Path) -> str:
    family, name, tag = cfg["family"], cfg.get("name"), cfg.get("tag")
    title = (f"{name}.{tag}" if tag else name) or f"{family} model"
    num_classes = args.get("num_classes", 0)
    pipeline = "image-classification" if num_classes else "image-feature-extraction"
    front = {"library_name": "timm" if format == "timm" else "zoo", "license": license or "other",
             "tags": ["image-classification", family, "zoo"] + (["timm"] if format == "timm" else []),
             "pipeline_tag": pipeline}
    inp = cfg["input"]
    size = "x".join(str(s) for s in inp["img_size"])
    params, macs = _cost(family, args, inp)
    rows = [("Family", family), ("Architecture", name or "-"), ("Weights", tag or "-"),
            ("Parameters", f"{params / 1e6:.2f} M" if params is not None else "?"),
            ("GMACs", f"{macs / 1e9:.2f} at {args.get('in_chans', 3)}x{size}" if macs is not None else "?"),
            ("Input size", f"{size}, mean {_nums(inp['mean'])}, std {_nums(inp['std'])}, crop_pct {inp['crop_pct']}, "
                           f"{inp['interpolation']}"),
            ("Classes", str(num_classes) if num_classes else "none (features)")]
    labels = cfg.get("label_names")
    if labels:
        rows.append(("Labels", ", ".join(str(x) for x in labels[:20]) + (f", ... ({len(labels)} in all)"
                                                                            if len(labels) > 20 else "")))
    rows += [(f"{k} (reported)", f"{v:.1f}") for k, v in metrics.items()]
    source = (cfg.get("weights") or {}).get("source")
    if source:
        rows.append(("Loaded from", f"`{source}`"))
    where = f"hf-hub:{repo_id}" if repo_id else str(save_dir)
    if format == "timm":
        ref = f"hf-hub:{repo_id}" if repo_id else f"local-dir:{where}"
        usage = f"import timm\n\nmodel = timm.create_model(\"{ref}\", pretrained=True).eval()"
    else:
        usage = f"import zoo\n\nmodel = zoo.create(\"{where}\").eval()  # weights, config and input size from this repo"
    usage += ("\nlogits = model(images)  # images: (B, 3, H, W), normalised as above" if num_classes else
              "\nfeatures = model(images)  # (B, D); model.forward_features(images) gives every token")
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n# {title}\n\n"
            f"A {family} model saved with zoo {__version__}.\n\n| | |\n|---|---|\n{table}\n\n"
            f"## Usage\n\n```python\n{usage}\n```\n")


def _nums(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _cost(family: str, args: Mapping[str, Any], inp: Mapping[str, Any]) -> Tuple[Optional[int], Optional[int]]:
    """Parameters and MACs of the architecture, measured on the meta device (no memory, no arithmetic)."""
    try:
        with torch.device("meta"):
            meta = REGISTRY.families[family].builder(**args)
        return count_params(meta), count_macs(meta, (args.get("in_chans", 3), *inp["img_size"]))
    except Exception as e:  # a card without numbers beats no card
        log.info("could not measure %s for the model card: %s", family, e)
        return None, None


def _metrics(weight: WeightTag) -> Dict[str, float]:
    return {k: v for k, v in (("top1", weight.top1), ("top5", weight.top5)) if v is not None}


# ====================================================================================== pushing
def push_to_hub(model: nn.Module, repo_id: str, private: Optional[bool] = None, revision: Optional[str] = None,
                commit_message: Optional[str] = None, token: Optional[str] = None, format: str = "zoo"):
    """Save `model` (see `save_pretrained`) and upload it to the Hub repo `repo_id`, created if needed.
    Returns huggingface_hub's CommitInfo (its `.commit_url` links the commit)."""
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        save_pretrained(model, tmp, format=format, repo_id=repo_id)
        return push_folder(tmp, repo_id, private=private, revision=revision, commit_message=commit_message,
                           token=token)


def push_folder(folder: PathLike, repo_id: str, private: Optional[bool] = None, revision: Optional[str] = None,
                commit_message: Optional[str] = None, token: Optional[str] = None):
    """Upload a folder written by `save_pretrained` (its model.safetensors, config.json, README.md) to
    `repo_id`: `HfApi.create_repo` (exist_ok), a branch for `revision` if needed, `HfApi.upload_folder`."""
    from huggingface_hub import HfApi

    folder = Path(folder).expanduser()
    source = _Source(folder=folder)
    config = _read_json(source.fetch(CONFIG_NAME), source.describe(CONFIG_NAME))
    _read_safetensors(source.fetch(WEIGHTS_NAME), source.describe(WEIGHTS_NAME), header_only=True)  # not a broken file
    if "family" in config:
        _spec_from_zoo_config(config, source.describe(CONFIG_NAME))
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


# ================================================================================ CLI functions
def download(name: str, revision: Optional[str] = None, cache_dir: Optional[PathLike] = None,
             force: bool = False) -> List[Path]:
    """Fetch into the Hugging Face cache what `zoo.create(name, pretrained=True)` (registry names) or
    `zoo.create(name)` (`hf-hub:` repos) needs, verified. Returns the local paths."""
    if isinstance(name, str) and name.startswith("hf-hub:"):
        source = _Source.parse(name, revision, cache_dir)
        paths = [source.fetch(CONFIG_NAME, force=force), source.fetch(WEIGHTS_NAME, force=force)]
        _read_safetensors(paths[1], source.describe(WEIGHTS_NAME), source.hint, header_only=True)
        return paths + [p for p in [source.fetch_optional("preprocessor_config.json")] if p is not None]
    variant, tag = REGISTRY.resolve(name)
    tag = tag or variant.default_tag
    if tag is None:
        raise ValueError(f"model {variant.name!r} has no pretrained weights to download")
    weight = variant.weights[tag]
    source = _Source(weight.hf_hub_id, revision, cache_dir, hint=f"zoo download {variant.name}.{tag}")
    paths = [source.fetch(weight.filename, weight.sha256, force=force)]
    _read_safetensors(paths[0], source.describe(weight.filename), source.hint, header_only=True)
    if weight.format == "transformers":
        paths.append(source.fetch(CONFIG_NAME, force=force))
    return paths


def convert_checkpoint(src: PathLike, source: str, out_dir: PathLike, model: Optional[str] = None) -> Path:
    """A research release (`source` "mae", "dinov2" or "swin", see zoo/convert.py) -> a zoo folder at `out_dir`.

    This is zoo's only pickle reader, and it uses `torch.load(weights_only=True)`: tensors and plain
    containers only, no arbitrary objects. `model` names the registry variant when it cannot be
    inferred from the checkpoint's shapes."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise WeightsNotFoundError(f"{src}: no such file")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        held = f"an object of type {found.group(1)}" if found else "something other than tensors"
        raise UnsafeWeightsError(
            f"{src}: torch.load(weights_only=True) refused it: it holds {held} ({type(e).__name__}). zoo unpickles "
            f"tensors and plain containers only; if you trust the file, save just its state dict with torch.save "
            f"and convert that.") from None
    try:
        converted = convert.from_research(source, convert.unwrap_checkpoint(obj),
                                          REGISTRY.model_info(model) if model else None)
    except convert.ConversionError as e:
        raise RepoConfigError(f"{src}: {e}") from None
    _require_family(converted.family, str(src))
    variant = REGISTRY.variants[converted.variant] if converted.variant else None
    weight = variant.weights.get(converted.tag) if variant is not None and converted.tag else None
    input_cfg = (weight.input if weight is not None and weight.input is not None else variant.input) if variant \
        else InputConfig(img_size=(224, 224))
    input_cfg = _parse_input({"img_size": converted.args.get("img_size", list(input_cfg.img_size))}, base=input_cfg)
    built = REGISTRY.build(converted.family, converted.args, input_cfg, name=converted.variant, tag=converted.tag)
    load_state_dict(built, converted.state_dict, REGISTRY.complete_args(converted.family, converted.args), str(src),
                    converted.notes)
    built.zoo_config["weights"]["license"] = weight.license if weight is not None else None
    return save_pretrained(built, out_dir)


def export(src: str, out_dir: PathLike, format: str = "zoo", revision: Optional[str] = None,
           cache_dir: Optional[PathLike] = None) -> Path:
    """Load `src` (a registry name with weights, `hf-hub:` repo or folder) and save it in `format`."""
    if is_repo_reference(src):
        model = REGISTRY.create(src, revision=revision, cache_dir=cache_dir)
    else:
        model = REGISTRY.create(src, pretrained=True, revision=revision, cache_dir=cache_dir)
    return save_pretrained(model, out_dir, format=format)


def _listing(files: Sequence[str], limit: int = 8) -> str:
    if not files:
        return "no files"
    return ", ".join(files[:limit]) + (f", ... ({len(files)} files)" if len(files) > limit else "")
