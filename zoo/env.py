"""What machine zoo runs on: CPU features, threads, library versions and the kernel each layer takes.

`zoo env` (or `zoo info --system`) prints `format_system_info(system_info())`; the benchmarks put
`machine_header()` above every table, so each number carries the machine it was measured on.
"""
from __future__ import annotations

import platform
import re
from importlib import metadata
from typing import Any, Dict, Optional

import torch

from .version import __version__
from .layers.fast_paths import cpu_features, fast_path_mode, fast_path_report


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _onednn_version() -> Optional[str]:
    found = re.search(r"MKL-DNN v([0-9.]+)", torch.__config__.show())  # PyTorch's build summary
    return found.group(1) if found else None


def system_info() -> Dict[str, Any]:
    """Everything `zoo env` shows, as plain data (JSON-serialisable).

    Keys: "cpu" (model, architecture, ISA level, features, ZOO_MAX_CPU_ISA cap), "threads" (intra-op,
    inter-op), "versions" (python, zoo, torch, timm, transformers, oneDNN), "torch_cpu_capability"
    (the kernels ATen dispatches to), "cuda" (device names, or []), "fast_paths" (mode and one entry
    per fast path: layers, dtype, enabled, the kernel that runs, why), "slow_precisions" (autocast
    dtypes that are emulated on this CPU: zoo warns once when they are used).
    """
    f = cpu_features()
    features = {"avx2": f.avx2, "avx512": f.avx512, "native_bf16": f.native_bf16, "native_fp16": f.native_fp16,
                "amx": f.amx, "onednn": f.onednn, "onednn_bf16": f.onednn_bf16}
    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return {
        "cpu": {"model": f.model, "architecture": f.architecture, "level": f.level, "features": features,
                "flags": list(f.flags), "isa_cap": f.isa_cap},
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "versions": {"python": platform.python_version(), "zoo": __version__, "torch": torch.__version__,
                     "timm": _version("timm"), "transformers": _version("transformers"),
                     "onednn": _onednn_version()},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": cuda,
        "fast_paths": {"mode": fast_path_mode(),
                       "paths": [{"name": c.name, "layers": c.layers, "dtype": c.dtype, "enabled": c.enabled,
                                  "path": c.path, "reason": c.reason} for c in fast_path_report()]},
        "slow_precisions": [name for name, native in (("bf16", f.native_bf16), ("fp16", f.native_fp16))
                            if not native],
    }


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_system_info(info: Dict[str, Any]) -> str:
    """`system_info()` as the text `zoo env` prints."""
    cpu, feats, v = info["cpu"], info["cpu"]["features"], info["versions"]
    lines = [
        f"CPU          {cpu['model']}; {cpu['architecture']}, level {cpu['level']}"
        + (f", capped by ZOO_MAX_CPU_ISA={cpu['isa_cap']}" if cpu["isa_cap"] else ""),
        f"  AVX2 {_yes(feats['avx2'])}, AVX-512 {_yes(feats['avx512'])}, native bf16 {_yes(feats['native_bf16'])}, "
        f"native fp16 {_yes(feats['native_fp16'])}, AMX {_yes(feats['amx'])}; oneDNN linear "
        f"{_yes(feats['onednn'])}, oneDNN bf16 {_yes(feats['onednn_bf16'])}",
        f"  flags{' (before the cap)' if cpu['isa_cap'] else ''}: {' '.join(cpu['flags']) or '(none reported)'}",
        f"threads      {info['threads']['intra_op']} (inter-op {info['threads']['inter_op']})",
        f"versions     python {v['python']}, zoo {v['zoo']}, torch {v['torch']}, timm {v['timm']}, "
        f"transformers {v['transformers'] or '(not installed)'}, oneDNN {v['onednn'] or '?'}",
        f"torch CPU    kernels dispatched for {info['torch_cpu_capability']}"
        + (" (ZOO_MAX_CPU_ISA caps zoo's choices only; ATEN_CPU_CAPABILITY caps PyTorch's)" if cpu["isa_cap"] else ""),
        f"CUDA         {', '.join(info['cuda']) if info['cuda'] else 'none'}",
        "",
        f"fast paths   mode {info['fast_paths']['mode']} (ZOO_FAST_PATHS=auto|on|off, zoo.set_fast_paths)",
    ]
    for p in info["fast_paths"]["paths"]:
        lines.append(f"  {p['layers']}, {p['dtype']}: {p['path']}")
        lines.append(f"      {'fast path' if p['enabled'] else 'PyTorch'}: {p['reason']}")
    if info["slow_precisions"]:
        slow = info["slow_precisions"]
        lines += ["", f"note         {' and '.join(slow)} {'is' if len(slow) == 1 else 'are'} emulated on this CPU "
                      f"(several times slower than float32; zoo warns once when used)"]
    return "\n".join(lines)


def machine_header(info: Optional[Dict[str, Any]] = None) -> str:
    """One line naming the machine, for the top of a benchmark table: CPU model, level and key features,
    threads, versions, fast-path mode, and the GPU when there is one."""
    info = info or system_info()
    cpu, feats, v = info["cpu"], info["cpu"]["features"], info["versions"]
    names = [n for n, k in (("AVX2", "avx2"), ("AVX-512", "avx512"), ("native bf16", "native_bf16"),
                            ("AMX", "amx")) if feats[k]]
    gpu = f"; GPU {', '.join(info['cuda'])}" if info["cuda"] else ""
    threads = info["threads"]["intra_op"]
    isa = cpu["architecture"]
    if isa == "x86_64":
        isa += f" with {', '.join(names) or 'no AVX2'}" + ("" if feats["native_bf16"] else ", no native bf16")
    return (f"{cpu['model']}; {isa}; {threads} thread{'s' * (threads != 1)}"
            + f"{gpu}; torch {v['torch']}, timm {v['timm']}, zoo {v['zoo']}; fast paths {info['fast_paths']['mode']}"
            + (f"; ZOO_MAX_CPU_ISA={cpu['isa_cap']}" if cpu["isa_cap"] else ""))
