"""Third-party plugins through the `zoo.plugins` entry-point group, with a real installed package.

tests/plugins/zoo-example-plugin is built and installed with pip (offline, into a temporary
directory) and a fresh Python process imports zoo with that directory on its path, exactly as a
user's environment would look after `pip install zoo-example-plugin`.
"""
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import zoo
from zoo.models.vit import VisionTransformer
from zoo.registry import Registry, ZooPluginWarning

PLUGIN_SRC = Path(__file__).parent / "plugins" / "zoo-example-plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
           "--no-cache-dir", "--target", str(target), str(PLUGIN_SRC)]
    subprocess.run(cmd, check=True, cwd=build, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert list(target.glob("zoo_example_plugin-*.dist-info"))
    return target


def run_with_plugin(site: Path, code: str) -> dict:
    """Run `code` in a fresh interpreter that sees the installed plugin; it prints one JSON object."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_installed_plugin_adds_family_and_variants_and_bad_plugins_are_skipped(plugin_site):
    result = run_with_plugin(plugin_site, """
        import json, warnings, torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import zoo
            names = zoo.list_models()
        model = zoo.create("pmlp_t", num_classes=4)
        out = model(torch.randn(2, 3, 32, 32))
        pico = zoo.create("vit_pico_patch8_32")
        print(json.dumps({
            "warnings": [str(w.message) for w in caught if issubclass(w.category, zoo.ZooPluginWarning)],
            "has_plugin_models": [n in names for n in ("patch_mlp_tiny", "vit_pico_patch8_32")],
            "has_hijack_models": [n in names for n in ("vit_nano_patch8_32", "fake_deit")],
            "out_shape": list(out.shape),
            "pico_type": type(pico).__name__,
            "plugin_family": zoo.model_info("pmlp_t").family,
            "plugin_source": zoo.model_info("pmlp_t").source,
            "vit_builder": zoo.registry.REGISTRY.families["vit"].builder.__qualname__,
            "deit_s": zoo.model_info("deit_s").name,
            "builtin_count": len(zoo.list_models(family="vit")),
            "patch_mlp_listed": zoo.list_models(family="patch_mlp"),
        }))
    """)
    assert result["has_plugin_models"] == [True, True]
    assert result["out_shape"] == [2, 4]
    assert result["pico_type"] == "VisionTransformer"
    assert result["plugin_family"] == "patch_mlp" and "example" in result["plugin_source"]
    assert result["patch_mlp_listed"] == ["patch_mlp_tiny"]
    # three bad entry points, exactly one warning each, each naming its plugin
    warnings = result["warnings"]
    assert len(warnings) == 3, warnings
    for name in ("broken", "hijack_family", "hijack_name"):
        assert sum(f"plugin '{name}'" in w for w in warnings) == 1, (name, warnings)
    assert any("not-installed-anywhere" in w for w in warnings)
    assert any("family 'vit' is already registered" in w for w in warnings)
    assert any("duplicate alias 'deit_s'" in w for w in warnings)
    # built-ins untouched, and the half-good hijack file was rejected as a whole
    assert result["vit_builder"] == "VisionTransformer"
    assert result["deit_s"] == "deit_small_patch16_224"
    assert result["has_hijack_models"] == [False, False]
    assert result["builtin_count"] == len(zoo.list_models(family="vit")) + 1  # + the plugin's vit_pico


def test_cli_lists_plugin_models(plugin_site):
    result = run_with_plugin(plugin_site, """
        import contextlib, io, json, warnings
        warnings.simplefilter("ignore")
        from zoo.cli import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["info", "pmlp_t"])
        print(json.dumps({"rc": rc, "out": buf.getvalue()}))
    """)
    assert result["rc"] == 0
    assert "patch_mlp_tiny" in result["out"] and "29,578" in result["out"]


def _fresh_registry():
    reg = Registry(plugins=False)
    reg.register_family("vit", VisionTransformer)
    return reg


def test_load_plugin_rolls_back_families_of_a_failing_plugin(tmp_path, monkeypatch):
    pkg = tmp_path / "half_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from pathlib import Path
        from torch import nn
        import zoo.registry

        def build(width: int = 8):
            return nn.Linear(width, width)

        zoo.registry.REGISTRY.register_family("half_family", build)
        ZOO_VARIANTS = Path(__file__).with_name("bad.yaml")
    """))
    (pkg / "bad.yaml").write_text("variants:\n  x: {family: half_family, args: {nope: 1}, input: {img_size: 8}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = _fresh_registry()
    monkeypatch.setattr(zoo.registry, "REGISTRY", reg)
    with pytest.warns(ZooPluginWarning, match=r"plugin 'half'.*bad\.yaml: variant 'x', field 'args\.nope'"):
        assert reg.load_plugin(EntryPoint("half", "half_plugin", "zoo.plugins")) is False
    assert "half_family" not in reg.families and "x" not in reg.variants
    assert "half" in reg.plugin_errors
