"""Shared test helpers. Everything runs offline, on the CPU, in float32 unless a test says otherwise."""
from __future__ import annotations

import pytest
import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter a random, non-trivial value (in place) and return the model.

    Fresh models hide mistakes: timm starts class tokens at ~1e-6 and LayerScale at 1e-5, so a
    misplaced token or a missing LayerScale would barely move the output. Here norms get weights
    near 1, LayerScale gains lie in [0.5, 1], tokens and positions are N(0, 0.1^2), and all other
    weights and biases N(0, 0.02^2).
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if name.endswith(("gamma", "gamma_1", "gamma_2")):
            p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
        elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * noise)
        elif "token" in name or "pos_embed" in name:
            p.copy_(0.1 * noise)
        else:
            p.copy_(0.02 * noise)
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference; the shapes must agree."""
    assert a.shape == b.shape, f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def offline(monkeypatch):
    """huggingface_hub in offline mode for this test. HF_HUB_OFFLINE is read once, when huggingface_hub is
    first imported (here, through timm, before any test runs), so the test patches the constant that
    `hf_hub_download` consults on every call; tests/test_hub.py's acceptance run sets the variable itself."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def sdpa_calls(monkeypatch):
    """A list that grows by one entry (the query dtype) per `F.scaled_dot_product_attention` call."""
    import torch.nn.functional as F

    calls, sdpa = [], F.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        calls.append(q.dtype)
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


@pytest.fixture
def cpu_isa(monkeypatch):
    """`cpu_isa(level, mode="auto")`: re-detect the CPU for this test as if `ZOO_MAX_CPU_ISA=level` were set
    (None: as the test session started, i.e. this machine or CI's cap), with `ZOO_FAST_PATHS=mode`; returns
    the new `CpuFeatures`. The cap only removes features, so the simulated machine never claims a kernel
    this one cannot run."""
    import os

    from zoo.layers import fast_paths

    session_cap = os.environ.get("ZOO_MAX_CPU_ISA")

    def apply(level=None, mode="auto"):
        level = level if level is not None else session_cap
        if level is None:
            monkeypatch.delenv("ZOO_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ZOO_MAX_CPU_ISA", level)
        monkeypatch.setenv("ZOO_FAST_PATHS", mode)
        fast_paths._redetect()
        return fast_paths.cpu_features()

    yield apply
    monkeypatch.undo()
    fast_paths._redetect()


def builtin_family(name: str):
    """The built-in `Family` record (builder and checkpoint hooks) of `name`, for a test's own Registry."""
    from zoo.models import FAMILIES

    return next(f for f in FAMILIES if f.name == name)
