"""zoo.layers.fast_paths: capability detection, the decisions it makes on the CPUs people have, the one
switch, the emulated-bf16 warning and `zoo env`. Other machines are simulated by passing their
capabilities to the pure detection function, or by capping this machine with ZOO_MAX_CPU_ISA."""
import json
import warnings

import pytest
import timm
import torch

import zoo
import zoo.layers.linear as linear_module
from conftest import max_diff, randomize_
from zoo.cli import main
from zoo.layers import Attention, WindowAttention, window_geometry
from zoo.layers import fast_paths
from zoo.layers.fast_paths import (
    FAST_PATHS, SlowPrecisionWarning, _capabilities_from_cpuinfo, _choose, _cpu_model_from_cpuinfo,
    detect_cpu_features, fast_path_report, set_fast_paths, use_fast_path)

AVX512 = {f"avx512_{f}": True for f in ("f", "bw", "vl", "dq", "cd")}
MACHINES = {  # capabilities as torch.cpu.get_capabilities() names them, oneDNN (linear op, bf16 kernels)
    "zen3_avx2": ({"avx": True, "avx2": True, "fma3": True}, "x86_64", (True, False)),
    "skylake_avx512": ({"avx2": True, **AVX512}, "x86_64", (True, True)),  # oneDNN bf16 emulated
    "zen4_avx512_bf16": ({"avx2": True, **AVX512, "avx512_bf16": True}, "x86_64", (True, True)),
    "sapphire_rapids_amx": ({"avx2": True, **AVX512, "avx512_bf16": True, "avx512_fp16": True, "amx_tile": True,
                             "amx_bf16": True, "amx_fp16": True}, "x86_64", (True, True)),
    "graviton_arm": ({"neon": True, "sve": True}, "aarch64", (False, False)),
}
AUTO = {  # what runs with ZOO_FAST_PATHS=auto, in FAST_PATHS order
    "zen3_avx2": (False, False, False, False),
    "skylake_avx512": (True, False, False, False),
    "zen4_avx512_bf16": (True, True, True, False),
    "sapphire_rapids_amx": (True, True, True, True),
    "graviton_arm": (False, False, False, False),
}
LEVEL = {"zen3_avx2": "avx2", "skylake_avx512": "avx512", "zen4_avx512_bf16": "avx512_bf16",
         "sapphire_rapids_amx": "amx", "graviton_arm": "generic"}


def machine(name, cap=None):
    caps, arch, (onednn, onednn_bf16) = MACHINES[name]
    return detect_cpu_features(caps, arch, name, onednn, onednn_bf16, cap)


@pytest.mark.parametrize("name", MACHINES)
def test_decisions_on_the_cpus_people_have(name):
    features = machine(name)
    assert features.level == LEVEL[name]
    auto = _choose(features, "auto")
    assert tuple(auto[p].enabled for p in FAST_PATHS) == AUTO[name]
    for choice in auto.values():
        assert choice.reason and choice.path and choice.layers
    assert not any(c.enabled for c in _choose(features, "off").values())
    forced = _choose(features, "on")  # everything that can run at all: oneDNN's ops need it, SDPA's rivals do not
    assert forced["linear_fp32"].enabled == MACHINES[name][2][0]
    assert forced["linear_bf16"].enabled == MACHINES[name][2][1]
    assert forced["attention_bf16"].enabled and forced["attention_fp16"].enabled


def test_an_avx2_cpu_gets_reasons_that_say_why():
    auto = _choose(machine("zen3_avx2"), "auto")
    assert "no AVX-512" in auto["linear_fp32"].reason and auto["linear_fp32"].path == "F.linear (MKL / BLAS)"
    assert "no native bf16" in auto["attention_bf16"].reason
    assert auto["attention_bf16"].path == "F.scaled_dot_product_attention"
    assert "lacks it" in auto["linear_bf16"].reason  # oneDNN cannot run bf16 there at all


@pytest.mark.parametrize("cap, level", [("amx", "amx"), ("avx512_bf16", "avx512_bf16"), ("avx512", "avx512"),
                                        ("avx2", "avx2"), ("generic", "generic")])
def test_the_cap_removes_everything_above_its_level(cap, level):
    capped = machine("sapphire_rapids_amx", cap)
    assert capped.level == level and capped.isa_cap == cap
    assert tuple(c.enabled for c in _choose(capped, "auto").values()) == AUTO[{
        "amx": "sapphire_rapids_amx", "avx512_bf16": "zen4_avx512_bf16", "avx512": "skylake_avx512",
        "avx2": "zen3_avx2", "generic": "graviton_arm"}[cap]]
    if cap in ("avx2", "generic"):
        assert not capped.onednn_bf16 and not capped.avx512
    if cap == "generic":  # as on another architecture: not even forcing runs oneDNN's ops
        assert not _choose(capped, "on")["linear_fp32"].enabled
    with pytest.raises(ValueError, match="ZOO_MAX_CPU_ISA='avx3' is not a known level; use one of generic, avx2"):
        machine("zen3_avx2", "avx3")


def test_reading_proc_cpuinfo():
    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
            "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse sse2 avx fma avx2 bmi2\n\nprocessor\t: 1\n")
    caps = _capabilities_from_cpuinfo(text)
    assert caps["avx2"] and not caps.get("avx512_f")
    assert _cpu_model_from_cpuinfo(text) == "AMD EPYC 7B13 (family 25, model 1)"
    spr = _capabilities_from_cpuinfo("flags : avx2 avx512f avx512bw avx512vl avx512dq avx512_bf16 amx_bf16 amx_tile")
    features = detect_cpu_features(spr, "x86_64", onednn=True, onednn_bf16=True)
    assert features.avx512 and features.native_bf16 and features.amx and features.level == "amx"


@pytest.mark.kernels
def test_the_switch(cpu_isa):
    features = cpu_isa(mode="off")
    assert not any(use_fast_path(p) for p in FAST_PATHS)
    set_fast_paths(True)
    assert fast_paths.fast_path_mode() == "on" and use_fast_path("attention_bf16")
    assert use_fast_path("linear_fp32") == features.onednn
    set_fast_paths(None)
    assert [c.enabled for c in fast_path_report()] == [c.enabled for c in _choose(features, "auto").values()]
    with pytest.raises(ValueError, match=r"set_fast_paths\(mode\)='fast': use one of auto, on, off"):
        set_fast_paths("fast")
    cpu_isa(mode="sometimes")
    with pytest.raises(ValueError, match="ZOO_FAST_PATHS='sometimes'"):
        use_fast_path("linear_fp32")


def _onednn_calls(monkeypatch):
    """A list that grows by one entry per call into oneDNN's linear op."""
    calls, op = [], linear_module._op

    def spy(*args):
        calls.append(args[-3])
        return op(*args)

    if op is not None:
        monkeypatch.setattr(linear_module, "_op", spy)
    return calls


@pytest.mark.kernels
def test_another_architecture_takes_pytorchs_paths(monkeypatch, cpu_isa, sdpa_calls):
    monkeypatch.setattr(fast_paths.platform, "machine", lambda: "aarch64")
    features = cpu_isa(mode="auto")
    assert features.architecture == "aarch64" and features.level == "generic" and not features.onednn
    ours = randomize_(zoo.create("vit_tiny_patch16_224", depth=2, img_size=64)).eval()
    ref = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = ref(x)
        sdpa_calls.clear()
        onednn = _onednn_calls(monkeypatch)
        assert max_diff(ours(x), expected) < 1e-4
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.warns(SlowPrecisionWarning, match="bf16"):
            low = ours(x)
    assert onednn == [] and sdpa_calls == [torch.float32] * 2 + [torch.bfloat16] * 2  # every attention call
    assert max_diff(low, expected) < 0.1


@pytest.mark.kernels
@pytest.mark.parametrize("mode", ["on", "off"])
def test_attention_paths_agree_in_bf16(cpu_isa, sdpa_calls, mode):
    cpu_isa(mode=mode)
    attn = randomize_(Attention(64, num_heads=4, qkv_bias=True)).eval()
    win = randomize_(WindowAttention(32, num_heads=2, window_size=4)).eval()
    x, w = torch.randn(2, 50, 64), torch.randn(2 * 4, 16, 32)
    geometry = window_geometry((8, 8), (4, 4), (2, 2), torch.device("cpu"))
    with torch.inference_mode():
        full = attn(x), win(w, geometry)
        with warnings.catch_warnings(), torch.autocast("cpu", dtype=torch.bfloat16):
            warnings.simplefilter("ignore", SlowPrecisionWarning)
            low = attn(x), win(w, geometry)
    assert sdpa_calls == [torch.float32] * 2 + ([] if mode == "on" else [torch.bfloat16] * 2)  # "on": explicit
    for a, b in zip(low, full):
        assert a.dtype == torch.bfloat16 and max_diff(a, b) < 0.05


@pytest.mark.kernels
def test_emulated_bf16_warns_once(cpu_isa):
    layer = torch.nn.Sequential(zoo.layers.Linear(8, 8), zoo.layers.Linear(8, 8))
    x = torch.randn(2, 8)
    cpu_isa("avx2")
    message = r"no native bf16 .*capped by ZOO_MAX_CPU_ISA=avx2.*float32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.warns(SlowPrecisionWarning, match=message) as seen:
            layer(x)
        assert len(seen) == 1  # two layers, one warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            layer(x)  # and not again
    cpu_isa("avx2")
    with pytest.warns(SlowPrecisionWarning, match=message):  # a model cast to bf16, no autocast
        layer.bfloat16()(x.bfloat16())
    layer.float()
    features = cpu_isa(None)  # this machine as it is (or as CI capped it)
    with warnings.catch_warnings(record=True) as seen, torch.autocast("cpu", dtype=torch.bfloat16):
        warnings.simplefilter("always")
        layer(x)
    assert [w.category for w in seen] == ([] if features.native_bf16 else [SlowPrecisionWarning])
    with warnings.catch_warnings(record=True) as seen:  # float32: never
        warnings.simplefilter("always")
        layer(x)
    assert not seen


@pytest.mark.kernels
def test_zoo_env(cpu_isa, capsys):
    cpu_isa("avx2")
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    assert "level avx2, capped by ZOO_MAX_CPU_ISA=avx2" in text and "AVX-512 no, native bf16 no" in text
    assert f"torch {torch.__version__}, timm {timm.__version__}" in text
    assert "Linear, Mlp, float32 (inference and training): F.linear (MKL / BLAS)" in text
    assert "bf16 and fp16 are emulated on this CPU" in text
    assert main(["info", "--system", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu"]["features"]["avx512"] is False and info["cpu"]["isa_cap"] == "avx2"
    assert info["threads"]["intra_op"] == torch.get_num_threads()
    assert [p["enabled"] for p in info["fast_paths"]["paths"]] == [False] * 4
    assert main(["info"]) == 2 and "--system" in capsys.readouterr().err
