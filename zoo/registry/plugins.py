"""Third-party families and variants: the `zoo.plugins` entry-point group.

An entry point names a module; importing it may call `zoo.register_family`, and if it defines
`ZOO_VARIANTS` (a path, or list of paths, to YAML in registry.yaml's format) those variants are added.
A plugin that fails to load, or that would replace a name zoo already has, is skipped with one
`ZooPluginWarning` naming it; everything else keeps working. See docs/plugins.md.
"""
from __future__ import annotations

import importlib.metadata
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, List

ENTRY_POINT_GROUP = "zoo.plugins"


class ZooPluginWarning(UserWarning):
    """A `zoo.plugins` entry point could not be loaded and was skipped."""


def entry_points() -> List[importlib.metadata.EntryPoint]:
    """The installed `zoo.plugins` entry points, sorted by name."""
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def load_plugin(registry: Any, ep: importlib.metadata.EntryPoint, parse_file: Callable[..., list]) -> bool:
    """Import one entry point into `registry` (a `Registry`) and add its variants, read with
    `parse_file(path, source)`; on any failure, undo and warn once. Returns whether it loaded.

    Undo means: families registered while it loaded are removed again, except those registered by
    a parent package of the entry point's module (e.g. `pkg` for `pkg.broken`), which imported
    fine and may serve the package's other entry points.
    """
    source = f"plugin {ep.name!r} ({ep.value})"
    families_before = set(registry.families)
    try:
        module = ep.load()
        files = getattr(module, "ZOO_VARIANTS", None)
        if files is None:
            files = []
        elif isinstance(files, (str, Path)) or hasattr(files, "read_text"):
            files = [files]
        registry.add_variants([v for f in files for v in parse_file(f, source)])
        return True
    except Exception as e:  # a broken plugin must not break zoo: undo its families, warn, go on
        for name in set(registry.families) - families_before:
            module_name = registry.families[name].builder.__module__
            if not (ep.module.startswith(module_name + ".") and module_name in sys.modules):
                del registry.families[name]
        registry.plugin_errors[ep.name] = f"{type(e).__name__}: {e}"
        warnings.warn(f"zoo: skipped {source}: {type(e).__name__}: {e}", ZooPluginWarning, stacklevel=3)
        return False
