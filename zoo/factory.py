"""`zoo.create` and everything else that needs both the registry and the weights code: this is the one
module that joins them (`zoo/registry/` knows nothing of weights, `zoo/weights/` nothing of the
registry). It also registers the built-in families (`zoo.models.FAMILIES`) when zoo is imported.

    model = zoo.create("deit_s", pretrained=True)         # registry tag -> Hub -> strict load
    model = zoo.create("hf-hub:me/deit-s-pets@v1")         # a repo written by zoo.save_pretrained
    model = zoo.create("runs/deit-s-pets")                 # the folder (or a timm / transformers repo)
    zoo.save_pretrained(model, "runs/deit-s-pets")        # model.safetensors, config.json, README.md
    zoo.push_to_hub(model, "me/deit-s-pets", private=True)

Loading checks before allocating and logs each adaptation (docs/hub.md)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import models
from .complexity import count_macs, count_params
from .helpers import to_2tuple
from .registry import REGISTRY, Registry
from .specs import ConversionError, Converted, InputConfig, UnknownModelError, Variant, WeightTag, parse_input
from .weights import adapt, card, loading, origins, push, research, save, unwrap
from .weights.loading import WeightsFile
from .weights.errors import RepoConfigError, WeightsError
from .weights.integrity import read_header, read_json, read_safetensors
from .weights.source import CONFIG_NAME, WEIGHTS_NAME, PathLike, Source

for _family in models.FAMILIES:
    REGISTRY.add_family(_family)


def is_repo_reference(name: Any) -> bool:
    """True for `"hf-hub:org/repo"`, a path object or a path-like string ('/' in it, or a leading '.' or '~'):
    what `create` loads as a saved model (it also takes a bare folder name no registered model has)."""
    path_like = isinstance(name, str) and (name.startswith(("hf-hub:", ".", "~")) or "/" in name or os.sep in name)
    return isinstance(name, os.PathLike) or path_like


def create(
    name: Union[str, "os.PathLike[str]"],
    pretrained: Union[bool, str] = False,
    num_classes: Optional[int] = None,
    img_size: Optional[Union[int, Tuple[int, int]]] = None,
    checkpoint_path: Optional[PathLike] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    registry: Optional[Registry] = None,
    checkpoint_branch: Optional[str] = None,
    family: Optional[str] = None,
    **overrides: Any,
) -> nn.Module:
    """Build a model by variant name or alias, optionally with a weight tag (`"vit_b_16"`, `"deit_s"`,
    `"vit_base_patch16_224.mae"`), or load a saved one (`"hf-hub:org/repo[@revision]"`, or a folder from
    `zoo.save_pretrained`, timm or transformers of a supported family). A tag (in the name or as
    `pretrained="tag"`) sets the architecture its weights need (e.g. num_classes) and the input config;
    `num_classes`, `img_size` and any builder argument (`drop_path_rate=0.1`, ...) override the registry.
    `pretrained=True` (the default tag) or `"tag"` downloads the tag's safetensors file from the Hub
    (`revision`, `cache_dir`; HF_HOME and HF_HUB_OFFLINE honoured) and loads it strictly, adapting
    weights made for another num_classes, img_size or in_chans (each change logged to "zoo.weights").
    `checkpoint_path=` loads a local .safetensors file, also one training code wrote (keys under
    'module.', 'teacher.' ... are found; `checkpoint_branch="student"` / `"ema"` picks another copy).
    `family` picks what a saved model is read as where several families read its origin (transformers'
    ViTMAEForPreTraining: the "vit" encoder, or the whole "mae" model with family="mae").
    `features_only=True` wraps the model as a dense-feature backbone (`out_indices`, `feature_norm`,
    `feature_pyramid`: `zoo.models.features.FeatureBackbone`). The module carries `model.zoo_config`
    (name, family, tag, arguments, input config, where loaded weights came from and what was adapted).
    Raises UnknownModelError, TypeError (an argument the family does not take), ValueError (conflicting
    arguments) and the `zoo.weights` errors (docs/hub.md)."""
    features_only = overrides.pop("features_only", False)
    wrap = {k: overrides.pop(k) for k in ("out_indices", "feature_norm", "feature_pyramid") if k in overrides}
    if wrap and not features_only:
        raise TypeError(f"create({name!r}): {', '.join(wrap)} only apply with features_only=True")
    if features_only:  # the model built as asked, then wrapped
        model = create(name, pretrained, num_classes, img_size, checkpoint_path, revision, cache_dir, registry,
                       checkpoint_branch, family, **overrides)
        return models.features.FeatureBackbone(model, **wrap)
    registry = registry or REGISTRY
    if is_repo_reference(name) or (isinstance(name, str) and os.path.isdir(name) and not registry.is_registered(name)):
        if checkpoint_path is not None:
            raise ValueError(f"create({str(name)!r}): a saved model brings its own weights; checkpoint_path= "
                             f"only applies to a registry name")
        return load_saved(name, num_classes=num_classes, img_size=img_size, revision=revision, cache_dir=cache_dir,
                          registry=registry, family=family, **overrides)
    if family is not None:
        raise ValueError(f"create({name!r}): family= only applies to a saved model (a folder or hf-hub: repo); "
                         f"a registry name has its family")
    variant, tag = registry.resolve(name)
    if isinstance(pretrained, str):
        if tag is not None and pretrained != tag:
            raise ValueError(f"conflicting weight tags: {name!r} names {tag!r} but pretrained={pretrained!r}")
        tag = registry.resolve(f"{variant.name}.{pretrained}")[1]
    elif pretrained and tag is None:
        tag = variant.default_tag
        if tag is None:
            raise ValueError(f"model {variant.name!r} has no pretrained weights; use pretrained=False, or "
                             f"pick one of: {', '.join(registry.list_models(pretrained=True))}")
    if pretrained and checkpoint_path is not None:
        raise ValueError(f"create({name!r}): give pretrained=True (weights from the Hub) or checkpoint_path= "
                         f"(a local file), not both")
    if not pretrained and (revision is not None or cache_dir is not None):
        raise ValueError(f"create({name!r}): revision= and cache_dir= only apply with pretrained=True")
    weight = variant.weights[tag] if tag else None
    args = dict(variant.args)
    if weight is not None:
        args["num_classes"] = weight.num_classes  # the architecture the tag's weights were made for
    input_cfg = weight.input if weight is not None and weight.input is not None else variant.input
    if checkpoint_branch is not None and checkpoint_path is None:
        raise ValueError(f"create({name!r}): checkpoint_branch= only applies with checkpoint_path=")
    weights = None
    if pretrained:
        weights = _weight_tag(registry, variant.name, weight, registry.complete_args(variant.family, args), revision,
                              cache_dir)
    elif checkpoint_path is not None:  # made for an architecture known only from its shapes
        path = adapt.checked_path(checkpoint_path)
        weights = WeightsFile(lambda meta: (read_header(path, str(path)) if meta else read_safetensors(path, str(path)),
                                         []), None, str(path), checkpoint_branch)
    if weights is not None:
        args.update(weights.conventions)  # the origin's resampling and input sizes; overrides still win
    model = build_checked(registry, variant.family, args, input_cfg, weights, num_classes=num_classes,
                          img_size=img_size, overrides=overrides, name=variant.name, tag=tag)
    if pretrained:
        model.zoo_config["weights"].update(license=weight.license, metrics=weight.metrics, base_model=weight.hf_hub_id,
                                           registry_tag=weight.tag)
    return model


def build_checked(registry: Registry, family_name: str, args: Mapping[str, Any], input_cfg: InputConfig,
                  weights: Optional[WeightsFile] = None, **build_args: Any) -> nn.Module:
    """`build` (same arguments), checked first on the meta device and then loaded with `weights`:
    see `zoo.weights.loading.build_and_load` (nothing is allocated for a model too large for this
    machine or weights that do not fit it)."""
    return loading.build_and_load(lambda: build(registry, family_name, args, input_cfg, **build_args),
                                  registry.families[family_name], weights, build_args.get("name") or family_name)


def build(
    registry: Registry,
    family_name: str,
    args: Mapping[str, Any],
    input_cfg: InputConfig,
    num_classes: Optional[int] = None,
    img_size: Optional[Union[int, Tuple[int, int]]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
    tag: Optional[str] = None,
) -> nn.Module:
    """Family `family_name` built from `args`, updated by the caller's `overrides`, `num_classes` and
    `img_size`; the module gets `zoo_config`. `args` must already be valid for the family; an
    override the builder does not take raises TypeError."""
    overrides = dict(overrides or {})
    unknown = registry.unknown_arg(family_name, overrides)
    if unknown is not None:
        raise TypeError(f"create({name or family_name!r}): {unknown[1]}")
    args = {**args, **overrides}
    if num_classes is not None:
        args["num_classes"] = num_classes
    if img_size is not None:
        args["img_size"] = img_size
        input_cfg = replace(input_cfg, img_size=to_2tuple(img_size, "img_size"))
    model = registry.families[family_name].builder(**args)
    model.zoo_config = {
        "name": name, "family": family_name, "tag": tag, "args": args, "input": input_cfg.to_dict(),
    }
    return model


def _weight_tag(registry: Registry, name: str, weight: WeightTag, source_args: Mapping[str, Any],
                revision: Optional[str], cache_dir: Optional[PathLike]) -> WeightsFile:
    """A registry weight tag: downloaded (or found in the cache) and verified; converted if need be."""
    source = Source(weight.hf_hub_id, revision, cache_dir, hint=f"zoo download {name}.{weight.tag}")
    path, label = source.fetch(weight.filename, weight.sha256), source.describe(weight.filename)
    config = read_json(source.fetch(CONFIG_NAME), source.describe(CONFIG_NAME)) \
        if weight.format == "transformers" else None

    header = read_header(path, label, source.hint)  # read once: the meta check and the conventions use it
    meta = _from_transformers(registry, config, header, source.describe(CONFIG_NAME)) if config is not None else None

    def read(on_meta: bool) -> Tuple[dict, List[str]]:
        tensors = header if on_meta else read_safetensors(path, label, source.hint)
        if config is None:
            return tensors, []
        converted = meta if on_meta else _from_transformers(registry, config, tensors, source.describe(CONFIG_NAME))
        return converted.state_dict, list(converted.notes)

    return WeightsFile(read, source_args, label, conventions=meta.conventions if meta is not None else {})


def _from_transformers(registry: Registry, config: Mapping[str, Any], state_dict: dict, label: str,
                       family: Optional[str] = None) -> Converted:
    try:
        _, convert = registry.converter("transformers", config.get("model_type"), family)
        return convert(config, state_dict)
    except (UnknownModelError, ConversionError) as e:
        raise RepoConfigError(f"{label}: {e}") from None


def convert_transformers(config: Mapping[str, Any], state_dict: dict, label: str = "config.json",
                         registry: Optional[Registry] = None,
                         family: Optional[str] = None) -> Tuple[Converted, Optional[Variant]]:
    """A transformers checkpoint (config.json as a dict, state dict) in zoo's terms, and the registry
    variant of its architecture (None when there is none; arguments that do not change the
    architecture, num_classes, img_size and norm_eps, aside); `family` as in `create`. Raises
    RepoConfigError naming `label`."""
    registry = registry or REGISTRY
    converted = _from_transformers(registry, config, state_dict, label, family)
    ignore = ("num_classes", "img_size", "norm_eps", *converted.conventions)
    variant = registry.match_variant(converted.family, converted.args, ignore=ignore,
                                     prefer=lambda v: converted.prefer in v.name or converted.prefer in v.weights)
    return converted, variant


def load_saved(ref: PathLike, num_classes: Optional[int] = None, img_size: Optional[Any] = None,
               revision: Optional[str] = None, cache_dir: Optional[PathLike] = None,
               registry: Optional[Registry] = None, family: Optional[str] = None, **overrides: Any) -> nn.Module:
    """Build and load a saved model: `hf-hub:org/name[@revision]` or a folder, in zoo, timm or
    transformers format. What `create` calls for such names (`family` as there). The config is
    checked before the weights are read: it may only name what this registry knows (RepoConfigError
    otherwise)."""
    registry = registry or REGISTRY
    registry.ensure_loaded()  # plugin families included
    source = Source.parse(ref, revision, cache_dir)
    what = source.describe(CONFIG_NAME)
    config = read_json(source.fetch(CONFIG_NAME), what)
    fmt = origins.config_format(config, what)
    wanted = family
    if fmt != "transformers":
        family, args, input_cfg, name, tag = _saved_spec(registry, config, fmt, what)
        if wanted is not None and wanted != family:
            raise RepoConfigError(f"{what} holds a {family!r} model; family={wanted!r} applies to transformers "
                                  f"checkpoints that several families read")
    path, label = source.fetch(WEIGHTS_NAME), source.describe(WEIGHTS_NAME)
    header = read_header(path, label, source.hint)  # checked before anything is built
    if fmt == "transformers":  # keys and builder arguments both come from the family's converter
        converted, variant = convert_transformers(config, header, what, registry, wanted)
        family, args, name, tag = converted.family, converted.args, variant.name if variant else None, None
        input_cfg = origins.transformers_input(source, args["img_size"], variant.input if variant else None)

    def read(meta: bool) -> Tuple[dict, List[str]]:
        state_dict = header if meta else read_safetensors(path, label, source.hint)
        if fmt != "transformers":
            return state_dict, []
        converted = _from_transformers(registry, config, state_dict, what, wanted)
        return converted.state_dict, converted.notes

    weights = WeightsFile(read, registry.complete_args(family, args), label)
    try:
        model = build_checked(registry, family, args, input_cfg, weights, num_classes=num_classes, img_size=img_size,
                              overrides=overrides, name=name, tag=tag)
    except ValueError as e:  # the builder's or the size check's: name the config that asked for it
        raise e if isinstance(e, WeightsError) else RepoConfigError(f"{what}: {e}") from None
    meta = dict(origins.saved_metadata(config, fmt, source), base_model=source.repo_id or config.get("base_model"))
    labels = meta.pop("label_names")
    model.zoo_config["weights"].update(meta)
    if labels is not None and len(labels) == getattr(model, "num_classes", -1):  # a new head has none
        model.zoo_config["label_names"] = labels
    return model


def _saved_spec(registry: Registry, config: Mapping[str, Any], fmt: str, what: str) -> origins.Spec:
    """A zoo or timm config.json read by `zoo.weights.origins`, checked against the registry: a
    registered family (or timm architecture) and arguments its builder accepts. RepoConfigError if not."""
    if fmt == "timm":
        arch = config.get("architecture")
        try:
            variant = registry.model_info(arch)
        except UnknownModelError as e:
            raise RepoConfigError(f"{what}: timm architecture {arch!r} is not a zoo model: {e}") from None
        spec = origins.timm_spec(config, what, variant)
        _check_args(registry, variant.family, config.get("model_args") or {}, f"{what}: model_args")
        return spec
    spec = origins.zoo_spec(config, what)
    if spec[0] not in registry.families:
        raise RepoConfigError(
            f"{what} names family {spec[0]!r}, which is not registered here (registered: "
            f"{', '.join(sorted(registry.families))}). zoo builds only registered families and never imports code "
            f"named by a downloaded file; if you trust the family's package, install it (it registers through "
            f"the zoo.plugins entry point) and load again.")
    _check_args(registry, spec[0], spec[1], what)
    return spec


def _check_args(registry: Registry, family: str, args: Mapping[str, Any], what: str) -> None:
    unknown = registry.unknown_arg(family, args)
    if unknown is not None:
        raise RepoConfigError(f"{what}: {unknown[1]}")


def variant_cost(name: str, input_size: Optional[Sequence[int]] = None) -> dict:
    """{'params', 'macs', 'input_size': (C, H, W) (default: the variant's), 'input_sizes': the sizes it takes}
    for a registered variant, measured on the meta device (no memory, no arithmetic)."""
    with torch.device("meta"):
        model = create(name)
    if input_size is None:
        input_size = (model.zoo_config["args"].get("in_chans", 3), *model.zoo_config["input"]["img_size"])
    return {"params": count_params(model), "macs": count_macs(model, input_size), "input_size": tuple(input_size),
            "input_sizes": card.input_sizes(model)}


def saved_info(ref: PathLike, registry: Optional[Registry] = None) -> dict:
    """What `zoo info DIR|hf-hub:ORG/NAME` shows of a saved model, built on the meta device from its config
    and its weights' header (no tensor read; an `hf-hub:` repo is fetched into the Hub cache first):
    {'source', 'family', 'variant', 'tag', 'args', 'input', 'input_sizes', 'params', 'weights'}."""
    with torch.device("meta"):
        model = create(ref, registry=registry)
    cfg = model.zoo_config
    return {"source": str(ref), "family": cfg["family"], "variant": cfg.get("name"), "tag": cfg.get("tag"),
            "args": cfg["args"], "input": cfg["input"], "input_sizes": card.input_sizes(model),
            "params": count_params(model), "weights": cfg.get("weights")}


# ====================================================================================== saving
def save_pretrained(model: nn.Module, save_dir: PathLike, format: str = "zoo", license: Optional[str] = None,
                    metrics: Optional[Mapping[str, float]] = None, repo_id: Optional[str] = None,
                    registry: Optional[Registry] = None) -> Path:
    """Write `model` (from `zoo.create`, with the same `registry`) to `save_dir`: model.safetensors,
    config.json and a README.md model card; see `zoo.weights.save.save_pretrained` for the formats
    ("zoo", "timm", "transformers"), the defaults of `license` / `metrics` and the errors."""
    registry = registry or REGISTRY
    cfg = save.zoo_config_of(model)
    family = registry.families[cfg["family"]]
    name = cfg.get("name")
    timm_variant = registry.variants.get(name) if format == "timm" and name else None
    timm_args = registry.complete_args(timm_variant.family, timm_variant.args) if timm_variant else None
    return save.save_pretrained(model, save_dir, family, registry.complete_args(family.name, cfg["args"]),
                                timm_args, format=format, license=license, metrics=metrics, repo_id=repo_id)


def push_to_hub(model: nn.Module, repo_id: str, private: Optional[bool] = None, revision: Optional[str] = None,
                commit_message: Optional[str] = None, token: Optional[str] = None, format: str = "zoo",
                registry: Optional[Registry] = None):
    """Save `model` (see `save_pretrained`) and upload it to the Hub repo `repo_id`, created if needed.
    Returns huggingface_hub's CommitInfo (its `.commit_url` links the commit)."""
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        save_pretrained(model, tmp, format=format, repo_id=repo_id, registry=registry)
        return push_folder(tmp, repo_id, private=private, revision=revision, commit_message=commit_message,
                           token=token, registry=registry)


def push_folder(folder: PathLike, repo_id: str, private: Optional[bool] = None, revision: Optional[str] = None,
                commit_message: Optional[str] = None, token: Optional[str] = None,
                registry: Optional[Registry] = None):
    """Upload a folder written by `save_pretrained` (see `zoo.weights.push.push_folder`), after checking
    that its zoo config names a family this registry has, with arguments its builder accepts."""
    registry = registry or REGISTRY
    registry.ensure_loaded()
    source = Source(folder=folder)
    config = read_json(source.fetch(CONFIG_NAME), source.describe(CONFIG_NAME))
    if origins.config_format(config, source.describe(CONFIG_NAME)) == "zoo":
        _saved_spec(registry, config, "zoo", source.describe(CONFIG_NAME))
    return push.push_folder(folder, repo_id, private=private, revision=revision, commit_message=commit_message,
                            token=token)


# ============================================================================ fetching, converting
def download(name: str, revision: Optional[str] = None, cache_dir: Optional[PathLike] = None,
             force: bool = False, registry: Optional[Registry] = None) -> List[Path]:
    """Fetch into the Hugging Face cache what `create(name, pretrained=True)` (registry names) or
    `create(name)` (`hf-hub:` repos) needs, verified. Returns the local paths."""
    if isinstance(name, str) and name.startswith("hf-hub:"):
        source = Source.parse(name, revision, cache_dir)
        paths = [source.fetch(CONFIG_NAME, force=force), source.fetch(WEIGHTS_NAME, force=force)]
        read_header(paths[1], source.describe(WEIGHTS_NAME), source.hint)
        extra = (source.fetch_optional(n) for n in ("preprocessor_config.json", "README.md"))
        return paths + [p for p in extra if p is not None]
    variant, tag = (registry or REGISTRY).resolve(name)
    tag = tag or variant.default_tag
    if tag is None:
        raise ValueError(f"model {variant.name!r} has no pretrained weights to download")
    weight = variant.weights[tag]
    source = Source(weight.hf_hub_id, revision, cache_dir, hint=f"zoo download {variant.name}.{tag}")
    paths = [source.fetch(weight.filename, weight.sha256, force=force)]
    read_header(paths[0], source.describe(weight.filename), source.hint)
    if weight.format == "transformers":
        paths.append(source.fetch(CONFIG_NAME, force=force))
    return paths


def convert_release(src: PathLike, source: str, out_dir: PathLike, model: Optional[str] = None,
                    registry: Optional[Registry] = None, branch: Optional[str] = None, overwrite: bool = False) -> Path:
    """A research release (`source`: one of `registry.readers("research")`; built in: "mae", "dinov2",
    "dinov3", "swin") -> a zoo folder at `out_dir`. The file is read with `torch.load(weights_only=True)` only
    (`zoo.weights.research`) and unwrapped (`zoo.weights.unwrap`: any nesting and wrapper prefix; `branch`
    picks teacher / student / EMA, teacher by default); `model` names the registry variant when the
    checkpoint's shapes do not.
    Raises RepoConfigError naming the file for an unknown source or model or an unreadable checkpoint."""
    registry = registry or REGISTRY
    label = str(Path(src).expanduser())
    save.check_out_dir(out_dir, overwrite)
    try:
        named = registry.model_info(model) if model else None
        try:
            family, convert = registry.converter("research", source, named.family if named else None)
        except UnknownModelError as e:
            if named is None:
                raise
            raise UnknownModelError(f"--model {named.name} is a {named.family!r} variant, but `--from {source}` "
                                    f"releases cannot be read as one ({e}): name a variant of that family, or "
                                    f"leave --model out") from None
        obj = research.read_checkpoint(src)
        anchors = getattr(convert, "anchors", None) or ([f"{family.first_conv}.weight"] if family.first_conv
                                                        else unwrap.largest_state_dict(obj))
        state_dict, unwrapped, prefix = unwrap.unwrap_state_dict(obj, anchors, branch, label)
        converted = convert(state_dict, named)
        converted = replace(converted, notes=unwrapped + list(converted.notes))
        variant, args = _complete_release(registry, converted, named)
    except (UnknownModelError, ConversionError) as e:
        raise RepoConfigError(f"{label}: {e}") from None
    # a release's tag (and license) only for the release itself, not for weights out of a training run
    tag = converted.tag if variant is not None and converted.tag in variant.weights \
        and not unwrap.written_by_training(prefix) else None
    weight = variant.weights.get(tag) if tag else None
    input_cfg = (weight.input if weight is not None and weight.input is not None else variant.input) if variant \
        else InputConfig(img_size=(224, 224))
    input_cfg = parse_input({"img_size": args.get("img_size", list(input_cfg.img_size))}, base=input_cfg)
    weights = WeightsFile(lambda meta: (converted.state_dict, list(converted.notes)),
                       registry.complete_args(converted.family, args), label)
    built = build_checked(registry, converted.family, args, input_cfg, weights, name=variant.name if variant else None,
                          tag=tag)
    built.zoo_config["weights"]["license"] = weight.license if weight is not None else None
    return save_pretrained(built, out_dir, registry=registry)


def _complete_release(registry: Registry, converted: Converted,
                      named: Optional[Variant]) -> Tuple[Optional[Variant], dict]:
    """The registry variant a converted release is, and its complete builder arguments."""
    if converted.match is None:  # the converter read every argument
        return named or registry.match_variant(converted.family, converted.args,
                                               ignore=tuple(converted.conventions)), converted.args
    variant = named or registry.variant_with_tag(converted.family, converted.tag, converted.match)
    if variant is None:
        described = ", ".join(f"{k}={x}" for k, x in converted.match.items())
        raise ConversionError(f"no registered variant with a {converted.tag!r} weight tag has {described}; name the "
                              f"architecture with --model NAME (zoo.list_models() lists them)")
    return variant, {**variant.args, **converted.args}


def export(src: str, out_dir: PathLike, format: str = "zoo", revision: Optional[str] = None,
           cache_dir: Optional[PathLike] = None, registry: Optional[Registry] = None, overwrite: bool = False) -> Path:
    """Load `src` (a registry name with weights, `hf-hub:` repo or folder) and save it in `format`.
    Raises ValueError for an `out_dir` that holds files, unless `overwrite`."""
    save.check_out_dir(out_dir, overwrite)
    pretrained = not is_repo_reference(src)
    model = create(src, pretrained=pretrained, revision=revision, cache_dir=cache_dir, registry=registry)
    return save_pretrained(model, out_dir, format=format, registry=registry)
