"""Settings for zoo's commands: one dataclass per command, filled from defaults, then a YAML file
(`--config`), then command-line flags (each later source overrides the earlier ones).

The dataclass is the single source of truth: `add_arguments` turns its fields into argparse flags
(`epochs` -> `--epochs`, help from the field's metadata) and `resolve` builds the instance.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import difflib
import typing
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Type, TypeVar

import yaml

T = TypeVar("T")


def setting(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text for the command line."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def compile_setting() -> Any:
    """The `--compile [BACKEND]` setting the jobs share (timm's `--torchcompile`): None (eager), or the
    torch.compile backend; the bare flag means "inductor"."""
    return setting(None, "torch.compile the model: --compile (inductor) or --compile BACKEND (aot_eager, eager: no "
                         "code generation)", nargs="?", const="inductor", aliases=("--torchcompile",))


def _base_type(tp: Any) -> Any:
    """Optional[X] -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple = (), amp_aliases: bool = False) -> None:
    """One flag per dataclass field; defaults are left unset so `resolve` knows what was given. A field's
    `aliases` metadata adds timm's names for it; `amp_aliases` adds timm's `--amp` / `--amp-dtype` for a
    `precision` field."""
    if amp_aliases and "precision" in {f.name for f in dataclasses.fields(cls)}:
        parser.add_argument("--amp", nargs=0, action=_Amp, default=argparse.SUPPRESS,
                            help="timm's name: mixed precision, as --precision fp16 (with --amp-dtype bfloat16: bf16)")
        parser.add_argument("--amp-dtype", action=_Amp, choices=("float16", "bfloat16"), default=argparse.SUPPRESS,
                            help="timm's name: the --amp dtype (float16 or bfloat16); alone it changes nothing")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if "default:" not in help_text:  # a help that explains its default keeps its own words
            help_text = f"{help_text} (default: {default})"
        kwargs: Dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": f.name}
        if f.metadata.get("aliases"):
            help_text = f"{help_text}; also {', '.join(f.metadata['aliases'])} (timm's name)"
            kwargs["help"] = help_text
        for key in ("choices", "nargs", "const"):
            if key in f.metadata:
                kwargs[key] = f.metadata[key]
        flags = (flag, *f.metadata.get("aliases", ()))  # aliases: the names timm's train.py uses
        if tp is bool and f.name.startswith("no_"):  # --no-cache: no --no-no-cache twin
            parser.add_argument(*flags, action="store_true", **kwargs)
        elif tp is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(tp) is dict:
            parser.add_argument(*flags, type=_yaml_mapping, metavar="YAML", **kwargs)
        elif typing.get_origin(tp) in (tuple, list):
            item = typing.get_args(tp)[0]
            n = len(typing.get_args(tp)) if typing.get_origin(tp) is tuple and ... not in typing.get_args(tp) else "+"
            parser.add_argument(*flags, type=item, nargs=n, metavar=f.name.upper(), **kwargs)
        else:
            parser.add_argument(*flags, type=tp if tp in (int, float, Path) else str, **kwargs)


class _Amp(argparse.Action):
    """timm's --amp / --amp-dtype, in either order: --amp sets precision fp16, or bf16 when --amp-dtype
    bfloat16 is given too; --amp-dtype alone changes nothing."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string == "--amp-dtype":
            namespace._amp_dtype = values
        else:
            namespace._amp = True
        if getattr(namespace, "_amp", False):
            namespace.precision = "bf16" if getattr(namespace, "_amp_dtype", "float16") == "bfloat16" else "fp16"


def _yaml_mapping(text: str) -> Dict[str, Any]:
    value = yaml.safe_load(text) if text.strip() else {}
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as '{{depth: 4}}', got {text!r}")
    return value


def load_yaml_config(path: Path, cls: type) -> Dict[str, Any]:
    """Read a YAML mapping of settings; keys may use '-' or '_'. Unknown keys are an error."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"--config {path}: cannot read it as YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of setting: value")
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"--config {path}: unknown setting {key!r}{hint}")
        out[name] = value
    return out


def resolve(cls: Type[T], args: Optional[argparse.Namespace] = None, configs: Sequence[Path] = (),
            **overrides: Any) -> T:
    """defaults < each YAML file in order < parsed flags < keyword overrides -> an instance of `cls`."""
    values: Dict[str, Any] = {}
    for config in configs:
        values.update(load_yaml_config(config, cls))
    if args is not None:
        names = {f.name for f in dataclasses.fields(cls)}
        values.update({k: v for k, v in vars(args).items() if k in names})
    values.update(overrides)
    hints = typing.get_type_hints(cls)
    for key, value in list(values.items()):
        tp = _base_type(hints[key])
        if value is not None and tp is Path:
            values[key] = Path(value)
        elif value is not None and typing.get_origin(tp) is tuple:
            values[key] = tuple(value)
        elif value is not None and tp is float and isinstance(value, int):
            values[key] = float(value)
    return cls(**values)


def to_dict(cfg: Any) -> Dict[str, Any]:
    """A JSON/YAML-friendly dict of a settings dataclass (paths and tuples as plain values)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return out


def command_line(command: str, cfg: Any) -> str:
    """The command that reproduces `cfg` (a settings dataclass): `command` followed by a flag for every
    setting that differs from its default, shell-quoted, e.g. "zoo finetune --epochs 5 --lr 0.001"."""
    import shlex

    parts = command.split()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if value == default or value is None:  # None: the flags cannot say it; the settings file can
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value or f.name.startswith("no_") else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            parts += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            parts += [flag, json.dumps(value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)
