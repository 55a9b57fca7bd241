"""Which CPU kernels the shared layers use on this machine, chosen by what the CPU has, and the one
switch that overrides the choice.

Four fast paths, each faster than PyTorch's own kernel only on some CPUs, so each runs only there:

- `linear_fp32`: float32 `Linear` on oneDNN's `_linear_pointwise` (GELU fused; a oneDNN backward in
  training) instead of `F.linear`. Where the CPU has AVX-512.
- `linear_bf16`: bf16 `Linear` inference on oneDNN with a cached, prepacked bf16 weight instead of
  `F.linear`. Where the CPU has native bf16 (AVX512_BF16 or AMX-BF16).
- `attention_bf16` / `attention_fp16`: attention with float32 scores and softmax (as SDPA's CPU kernel)
  and the weighted sum of values as a low-precision GEMM, chunked in inference, instead of
  `F.scaled_dot_product_attention`. Where the CPU has native bf16 / fp16 (AVX512_FP16 or
  AMX-FP16).

Everywhere else (other architectures, CUDA, float64) the layers take PyTorch's kernels. The
measurements behind the rules: docs/benchmarks.md, "Which kernels run where".

- `ZOO_FAST_PATHS=auto|on|off` (read once) or `set_fast_paths("auto" | "on" | "off")`: "auto" decides
  by the rules above, "on" takes every fast path this machine can run at all, "off" none (one switch,
  as timm's `TIMM_FUSED_ATTN` / `set_fused_attn`).
- `ZOO_MAX_CPU_ISA=generic|avx2|avx512|avx512_bf16|amx` caps what detection reports, so any machine
  takes the decisions of a lesser CPU (`avx2`: no AVX-512, no native bf16; `generic`: not x86).
- `fast_path_report()` says what runs and why (`zoo env` prints it); bf16 / fp16 on a CPU that
  emulates them warns once (`SlowPrecisionWarning`).
"""
from __future__ import annotations

import os
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch

ISA_LEVELS = ("generic", "avx2", "avx512", "avx512_bf16", "amx")
MODES = ("auto", "on", "off")
FAST_PATHS = ("linear_fp32", "linear_bf16", "attention_bf16", "attention_fp16")


class SlowPrecisionWarning(UserWarning):
    """Low-precision autocast on a CPU that has no hardware support for that dtype (it is emulated)."""


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU (and this PyTorch build) offers the fast paths, after the `ZOO_MAX_CPU_ISA` cap."""

    architecture: str  # 'x86_64', 'aarch64', ...
    model: str  # the CPU's model name
    avx2: bool
    avx512: bool  # AVX-512 F, BW, VL and DQ (oneDNN's avx512_core)
    native_bf16: bool  # bf16 dot products in hardware: AVX512_BF16 or AMX-BF16
    native_fp16: bool  # fp16 arithmetic in hardware: AVX512_FP16 or AMX-FP16
    amx: bool  # AMX tiles (Intel Sapphire Rapids and later)
    onednn: bool  # this build has oneDNN and its linear op, on an x86-64 CPU
    onednn_bf16: bool  # oneDNN can run bf16 kernels here (natively or emulated on AVX-512)
    isa_cap: Optional[str] = None  # ZOO_MAX_CPU_ISA, when set
    flags: Tuple[str, ...] = field(default=(), compare=False)  # the SIMD features found, before the cap

    @property
    def level(self) -> str:
        """The highest `ISA_LEVELS` entry these features reach."""
        if self.amx and self.native_bf16:
            return "amx"
        if self.avx512 and self.native_bf16:
            return "avx512_bf16"
        return "avx512" if self.avx512 else ("avx2" if self.avx2 else "generic")


def _normalise_architecture(machine: str) -> str:
    machine = machine.lower()
    return "x86_64" if machine in ("x86_64", "amd64", "x64") else machine


def _capabilities_from_cpuinfo(text: str) -> Dict[str, bool]:
    """The flags line of /proc/cpuinfo, renamed to `torch.cpu.get_capabilities()`'s keys."""
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            renamed = {"avx512f": "avx512_f", "avx512bw": "avx512_bw", "avx512vl": "avx512_vl",
                       "avx512dq": "avx512_dq"}
            return {renamed.get(f, f): True for f in flags}
    return {}


def _cpu_model_from_cpuinfo(text: str) -> str:
    """'model name', plus the family / model numbers that tell apart CPUs sold under one name
    (an "AMD EPYC" of family 25 is Zen 3, of family 26 Zen 5)."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
        if not line.strip():
            break  # the first processor's block is enough
    name = fields.get("model name", "")
    if name and fields.get("cpu family") and fields.get("model"):
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def _raw_capabilities() -> Tuple[Dict[str, bool], str]:
    """(features, CPU model name) from PyTorch's cpuinfo when it exposes them, else /proc/cpuinfo."""
    caps: Dict[str, bool] = {}
    name = ""
    get = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.9
    if get is not None:
        try:
            found = dict(get())
            name = str(found.pop("cpu_name", "") or "")
            caps = {k: bool(v) for k, v in found.items() if isinstance(v, bool)}
        except Exception:  # noqa: BLE001 - an unreadable cpuinfo must not break model code
            caps = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    if not caps:
        caps = _capabilities_from_cpuinfo(text)
    # cpuinfo's name is often just the vendor ("AMD EPYC"); /proc/cpuinfo's model name is the same or longer
    name = _cpu_model_from_cpuinfo(text) or name or platform.processor() or "unknown CPU"
    return caps, name


def onednn_linear_ops() -> Tuple[Optional[Callable], Optional[Callable]]:
    """(oneDNN's linear op, its weight-prepacking op) where this PyTorch build has them, else (None, None).
    They are private PyTorch ops (`torch.ops.mkldnn`); whether they run is `use_fast_path`'s decision."""
    if not torch.backends.mkldnn.is_available():
        return None, None
    try:
        return torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight
    except (AttributeError, RuntimeError):
        return None, None


def _onednn_support() -> Tuple[bool, bool]:
    """(oneDNN's linear op exists in this build, oneDNN runs bf16 kernels on this CPU)."""
    if onednn_linear_ops()[0] is None:
        return False, False
    try:
        return True, bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True, False


def detect_cpu_features(
    capabilities: Mapping[str, bool],
    architecture: str,
    model: str = "",
    onednn: bool = False,
    onednn_bf16: bool = False,
    isa_cap: Optional[str] = None,
) -> CpuFeatures:
    """Fold raw CPU capabilities into `CpuFeatures`. Pure: tests pass made-up machines.

    `capabilities`: feature name -> present, named as `torch.cpu.get_capabilities()` names them
    (`avx2`, `avx512_f`, `avx512_bf16`, `amx_bf16`, ...). `architecture`: `platform.machine()`.
    `onednn`: this PyTorch build has oneDNN's linear op; `onednn_bf16`: oneDNN runs bf16 kernels on
    this CPU (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`). `isa_cap`, one of `ISA_LEVELS`, removes
    every feature above that level (`ZOO_MAX_CPU_ISA`). Raises ValueError for an unknown cap.
    """
    if isa_cap is not None and isa_cap not in ISA_LEVELS:
        raise ValueError(f"ZOO_MAX_CPU_ISA={isa_cap!r} is not a known level; use one of {', '.join(ISA_LEVELS)} "
                         f"(or unset it to use what the CPU reports)")
    arch = _normalise_architecture(architecture)
    has = lambda name: bool(capabilities.get(name, False))  # noqa: E731
    x86 = arch == "x86_64"
    avx2 = x86 and has("avx2")
    avx512 = x86 and all(has(f"avx512_{f}") for f in ("f", "bw", "vl", "dq"))
    bf16 = x86 and (has("avx512_bf16") and avx512 or has("amx_bf16"))
    fp16 = x86 and (has("avx512_fp16") and avx512 or has("amx_fp16"))
    amx = x86 and has("amx_tile")
    onednn = onednn and x86
    onednn_bf16 = onednn and onednn_bf16
    if isa_cap is not None:
        rank = ISA_LEVELS.index(isa_cap)
        avx2 = avx2 and rank >= 1
        avx512 = avx512 and rank >= 2
        onednn = onednn and rank >= 1
        onednn_bf16 = onednn_bf16 and rank >= 2  # as on the AVX2 Zen 3, where oneDNN reports no bf16
        bf16 = bf16 and rank >= 3
        fp16 = fp16 and rank >= 4
        amx = amx and rank >= 4
    flags = tuple(sorted(k for k, v in capabilities.items() if v and k.startswith(("avx", "amx", "fma"))))
    return CpuFeatures(architecture=arch, model=model, avx2=avx2, avx512=avx512, native_bf16=bf16,
                       native_fp16=fp16, amx=amx, onednn=onednn, onednn_bf16=onednn_bf16, isa_cap=isa_cap,
                       flags=flags)


def _features_from_machine() -> CpuFeatures:
    caps, name = _raw_capabilities()
    onednn, onednn_bf16 = _onednn_support()
    cap = os.environ.get("ZOO_MAX_CPU_ISA", "").strip().lower() or None
    return detect_cpu_features(caps, platform.machine(), name, onednn, onednn_bf16, cap)


# ------------------------------------------------------------------------------------ the decisions
@dataclass(frozen=True)
class PathChoice:
    """One layer kind's decision: does the fast path run, what runs, and why."""

    name: str  # one of FAST_PATHS
    enabled: bool
    reason: str
    layers: str = ""  # the layer kinds it concerns
    dtype: str = ""  # when it applies
    path: str = ""  # what runs: the fast path's kernel, or PyTorch's


@dataclass(frozen=True)
class _Rule:
    layers: str  # the layer kinds it concerns
    dtype: str  # when it applies
    fast: str  # the fast path's kernel
    plain: str  # PyTorch's kernel
    can_run: str  # the CpuFeatures field without which the kernel cannot run at all ("" = always can)
    cannot: str  # what is missing then
    pays: str  # the CpuFeatures field that makes it pay
    why_yes: str
    why_no: str


_SDPA = "F.scaled_dot_product_attention"
_RULES = {
    "linear_fp32": _Rule(
        "Linear, Mlp", "float32 (inference and training)", "oneDNN _linear_pointwise, GELU fused; oneDNN backward",
        "F.linear (MKL / BLAS)", "onednn", "needs oneDNN's linear op on an x86-64 CPU",
        "avx512", "AVX-512: oneDNN's float32 GEMM measured faster than MKL's (on AMD EPYCs)",
        "no AVX-512: oneDNN's float32 GEMM is no faster than PyTorch's there"),
    "linear_bf16": _Rule(
        "Linear, Mlp", "bf16 (autocast or bf16 weights), inference", "oneDNN with a cached prepacked bf16 weight",
        "F.linear", "onednn_bf16", "needs oneDNN's bf16 kernels (torch.ops.mkldnn._is_mkldnn_bf16_supported())",
        "native_bf16", "native bf16 (AVX512_BF16 / AMX-BF16): prepacked bf16 weights, no cast per call",
        "no native bf16: bf16 is emulated there"),
    "attention_bf16": _Rule(
        "Attention, WindowAttention", "bf16", "float32 scores + softmax, bf16 values GEMM (chunked in inference)", _SDPA,
        "", "", "native_bf16", "native bf16: measured faster than SDPA, same numerics (float32 scores)",
        "no native bf16: SDPA's float32 compute is faster than emulated bf16 GEMMs"),
    "attention_fp16": _Rule(
        "Attention, WindowAttention", "fp16", "float32 scores + softmax, fp16 values GEMM (chunked in inference)", _SDPA,
        "", "", "native_fp16", "native fp16 (AVX512_FP16 / AMX-FP16)",
        "no native fp16: SDPA's float32 compute is faster than emulated fp16 GEMMs"),
}


def _choose(features: CpuFeatures, mode: str) -> Dict[str, PathChoice]:
    """The decision for every fast path on a machine with `features`, in `mode` ("auto", "on", "off")."""
    f = features
    where = f"{f.model or 'this CPU'}" + (f" (capped at {f.isa_cap} by ZOO_MAX_CPU_ISA)" if f.isa_cap else "")
    choices = {}
    for name in FAST_PATHS:
        rule = _RULES[name]
        good = getattr(f, rule.pays)
        if rule.can_run and not getattr(f, rule.can_run):
            enabled, reason = False, f"{rule.cannot}; {where} lacks it"
        elif mode == "off":
            enabled, reason = False, "fast paths switched off (ZOO_FAST_PATHS / set_fast_paths)"
        elif mode == "on":
            enabled, reason = True, "fast paths forced on (ZOO_FAST_PATHS / set_fast_paths)"
            reason += "" if good else f", although {rule.why_no}"
        else:
            enabled, reason = good, rule.why_yes if good else rule.why_no
        choices[name] = PathChoice(name, enabled, reason, rule.layers, rule.dtype, rule.fast if enabled else rule.plain)
    return choices


def _parse_mode(mode: Union[str, bool, None], source: str) -> str:
    if mode is None or mode is True or mode is False:
        return {None: "auto", True: "on", False: "off"}[mode]
    value = str(mode).strip().lower()
    value = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off", "": "auto"}.get(
        value, value)
    if value not in MODES:
        python = "" if source.startswith("ZOO_") else " (or True / False / None)"
        raise ValueError(f"{source}={mode!r}: use one of {', '.join(MODES)}{python}")
    return value


class _State:
    """The machine's features and the current decisions, computed on first use (not at import)."""

    features: Optional[CpuFeatures] = None
    mode: Optional[str] = None
    enabled: Dict[str, bool] = {}
    choices: Dict[str, PathChoice] = {}
    warned: set = set()


def cpu_features() -> CpuFeatures:
    """This machine's `CpuFeatures` (after `ZOO_MAX_CPU_ISA`), detected once and cached.

    Raises ValueError when `ZOO_MAX_CPU_ISA` holds an unknown level.
    """
    if _State.features is None:
        _State.features = _features_from_machine()
    return _State.features


def _refresh() -> None:
    if _State.mode is None:
        _State.mode = _parse_mode(os.environ.get("ZOO_FAST_PATHS"), "ZOO_FAST_PATHS")
    _State.choices = _choose(cpu_features(), _State.mode)
    _State.enabled = {name: c.enabled for name, c in _State.choices.items()}


def set_fast_paths(mode: Union[str, bool, None] = "auto") -> None:
    """Override the fast-path choice for this process: "auto" (by capability, the default), "on"
    (every fast path this machine can run) or "off" (PyTorch's own kernels everywhere).

    `True` / `False` / `None` mean "on" / "off" / "auto". Takes effect on the next forward call.
    Raises ValueError for anything else.
    """
    _State.mode = _parse_mode(mode, "set_fast_paths(mode)")
    _refresh()


def fast_path_mode() -> str:
    """The current mode: "auto", "on" or "off"."""
    if _State.mode is None:
        _refresh()
    return _State.mode


def use_fast_path(name: str) -> bool:
    """Whether the fast path `name` (one of `FAST_PATHS`) runs now. Cheap: called on every forward.

    Raises ValueError for an unknown name, and (on every call until fixed) for an unknown
    `ZOO_FAST_PATHS` or `ZOO_MAX_CPU_ISA` value. False while torch.compile traces the model: the fast
    paths are eager-mode kernels, and under the compiler its own code generation chooses the kernels.
    """
    if torch.compiler.is_compiling():
        return False
    enabled = _State.enabled
    if not enabled:
        _refresh()
        enabled = _State.enabled
    try:
        return enabled[name]
    except KeyError:
        raise ValueError(f"unknown fast path {name!r}; one of {', '.join(FAST_PATHS)}") from None


def fast_path_report() -> List[PathChoice]:
    """One `PathChoice` per fast path, in `FAST_PATHS` order: what runs and why."""
    if not _State.choices:
        _refresh()
    return [_State.choices[name] for name in FAST_PATHS]


def _redetect() -> None:
    """Forget the detected features and mode (tests change ZOO_MAX_CPU_ISA / ZOO_FAST_PATHS, then call this)."""
    _State.features, _State.mode, _State.enabled, _State.choices = None, None, {}, {}
    _State.warned = set()


def warn_if_emulated(dtype: torch.dtype) -> None:
    """Warn once per process and dtype (`SlowPrecisionWarning`) when CPU compute in `dtype` (bf16 /
    fp16, by autocast or by casting the model) has no hardware support here: it is emulated, several
    times slower than float32. Other dtypes return at once."""
    if dtype in _State.warned or dtype not in (torch.bfloat16, torch.float16):
        return
    f = cpu_features()
    native = f.native_bf16 if dtype == torch.bfloat16 else f.native_fp16
    _State.warned.add(dtype)
    if not native:
        name = "bf16" if dtype == torch.bfloat16 else "fp16"
        hw = "AVX512_BF16 or AMX-BF16" if dtype == torch.bfloat16 else "AVX512_FP16 or AMX-FP16"
        warnings.warn(
            f"{name} on {f.model or 'this CPU'}, which has no native {name} ({hw}"
            + (f"; capped by ZOO_MAX_CPU_ISA={f.isa_cap}" if f.isa_cap else "")
            + f"): {name} is emulated there and runs several times slower than float32. Use float32 on "
            f"this machine (no autocast; --precision fp32 in zoo's commands).", SlowPrecisionWarning, stacklevel=2)
