"""`--fsdp`: fully sharded data parallel training, for models whose training does not fit one GPU.

Each process keeps only its 1/world_size share of every parameter, gradient and optimizer state
(PyTorch's FSDP2, `torch.distributed.fsdp.fully_shard`; Zhao et al. 2023, "PyTorch FSDP"):

- `shard`: one FSDP unit per transformer block (every child of a `blocks` / `decoder_blocks`
  container: ViT, DeiT, DINOv2/v3, the blocks of Swin's stages, both halves of MAE), then the model itself for what is
  left (embeddings, norm, head). A unit's weights are gathered just before its forward and backward
  and freed after. With `--precision bf16` the mixed precision policy computes in bf16 and reduces
  gradients in float32; the sharded master weights stay float32.
- `save_sharded` / `load_sharded`: checkpoints in torch.distributed.checkpoint's format (a `sharded/`
  folder: every process writes its own shards of the weights, the optimizer state and a sharded EMA;
  any number of processes can load them back). `save_sharded_checkpoint` is the Trainer's checkpoint with them.
- `gather_full_model`: the whole model as a plain module on the main process (weights gathered from every
  process, on the CPU), for figures, `best/` and the final `model.safetensors`.

The command shards its model (and its EMA) before it builds the optimizer (FSDP replaces the
parameters); the `Trainer` sees a sharded model (`is_sharded`) and checkpoints it this way.
"""
from __future__ import annotations

import copy
import re
import warnings
import weakref
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .checkpoint import SHARDED, begin_checkpoint, commit_checkpoint, temporary_folder
from ..common.distributed import DistInfo, all_reduce, barrier

_UNIT = re.compile(r"(?:^|\.)(?:decoder_)?blocks\.\d+$")  # a transformer block: a child of a blocks container
_TEMPLATES: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def check_fsdp(precision: str, dist: DistInfo) -> None:
    """ValueError unless `--fsdp` can run: a process group (torchrun's processes), precision fp32 or bf16."""
    import torch.distributed as tdist

    if not (dist.distributed or tdist.is_initialized()):
        raise ValueError("--fsdp shards the model over several processes and this job has one: launch it with "
                         "`torchrun --nproc_per_node N -m zoo ...` with N >= 2 (a resumed --fsdp run too: its "
                         "config.yaml keeps --fsdp), or train without --fsdp")
    if precision == "fp16":
        raise ValueError("--fsdp trains with --precision bf16 or fp32 (fp16, which --amp without --amp-dtype "
                         "bfloat16 selects, would need a sharded gradient scaler); use --precision bf16")


def block_units(model: nn.Module) -> List[nn.Module]:
    """The modules `shard` makes FSDP units of: every child of a `blocks` / `decoder_blocks` container,
    in order. ValueError when the model has none (FSDP would then gather the whole model at once)."""
    units = [m for name, m in model.named_modules() if _UNIT.search(name)]
    if not units:
        raise ValueError(f"--fsdp: {type(model).__name__} has no transformer blocks (children of a `blocks` "
                         f"container) to shard one by one; train it without --fsdp (zoo's ViT, DeiT, DINOv2/v3, "
                         f"Swin and MAE models have them)")
    return units


def _meta_template(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters and persistent buffers are on the meta device (no memory);
    non-persistent buffers (tables computed at construction) are copied as they are."""
    memo: Dict[int, torch.Tensor] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for module in model.modules():
        for name, b in module._buffers.items():
            if b is not None and name not in module._non_persistent_buffers_set:
                memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _broadcast_from_main(model: nn.Module, device: torch.device) -> None:
    """Every process's weights := the main process's (what DDP does when it wraps a model): each process
    built and initialised its own copy, and FSDP keeps each process's slice of its own copy."""
    import torch.distributed as tdist

    with torch.no_grad():
        for t in model.state_dict().values():
            moved = t.to(device)
            tdist.broadcast(moved, src=0)
            if moved is not t:
                t.copy_(moved)


def shard(model: nn.Module, precision: str, dist: DistInfo) -> nn.Module:
    """Shard `model` in place over the processes of `dist` (`fully_shard` per block, then the root) and
    return it; the process group must exist (the commands check `check_fsdp` first). Its parameters move
    to `dist.device`, 1/world_size of each per process, taken from the main process's copy. `precision`
    'bf16' computes in bf16 with float32 gradient reduction; 'fp32' in float32. ValueError (`block_units`)
    when the model has no blocks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    units = block_units(model)
    # FSDP warns when a model returns a view (the pooled class token is one) in case the caller modifies it
    # in place; the training steps never do, and the warning would alarm every run of those models
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDP\w+\) returned a view tensor")
    _TEMPLATES[model] = _meta_template(model)
    _broadcast_from_main(model, dist.device)
    mesh = init_device_mesh(dist.device.type, (dist.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if precision == "bf16" else MixedPrecisionPolicy()
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether `shard` (FSDP) has sharded `model`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def gather_full_model(model: nn.Module, dist: DistInfo) -> Optional[nn.Module]:
    """The whole sharded `model` as a plain module (float32, on the CPU) on the main process; None on
    the others. A collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not dist.is_main:
        return None
    plain = copy.deepcopy(_TEMPLATES[model])
    plain.load_state_dict(full, strict=True, assign=True)
    plain.train(model.training)
    return plain


def save_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 others: Optional[Dict[str, nn.Module]] = None) -> None:
    """Every process writes its shards of the weights and optimizer state (and of the sharded `others`,
    e.g. an EMA of the weights, by name) to `folder/sharded/` (torch.distributed.checkpoint). A collective."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_state(model, optimizer, others), checkpoint_id=str(Path(folder) / SHARDED))


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 others: Optional[Dict[str, nn.Module]] = None) -> None:
    """Read `folder/sharded/` back into the sharded `model`, `optimizer` and `others` (resharded if the
    number of processes changed). A collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    state = _state(model, optimizer, others)
    dcp.load(state, checkpoint_id=str(Path(folder) / SHARDED))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    for name, module in (others or {}).items():
        set_model_state_dict(module, state[name])


def _state(model: nn.Module, optimizer: torch.optim.Optimizer, others: Optional[Dict[str, nn.Module]]) -> dict:
    """What a sharded checkpoint holds: {"model", "optimizer", *others}, each a state dict of this
    process's shards."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    weights, optim = get_state_dict(model, optimizer)
    return {"model": weights, "optimizer": optim, **{k: get_model_state_dict(m) for k, m in (others or {}).items()}}


def save_sharded_checkpoint(trainer: Any, name: str, state: dict, epoch_end: bool, final: bool) -> Optional[Path]:
    """`Trainer.save` for a sharded model: every process writes its shards into the checkpoint's temporary folder,
    then the main process adds state.pt (and, in the `final` checkpoint, the whole weights as
    model.safetensors) and renames it into place. The whole model is gathered (`unsharded_model`) for
    the final checkpoint and, at an `epoch_end`, when a callback `needs_whole_model` (figures). Returns
    the folder on the main process, None on the others."""
    from safetensors.torch import save_file

    dist, out = trainer.dist, trainer.out_dir
    tmp = begin_checkpoint(out, name) if dist.is_main else None
    barrier()  # the folder exists before anyone writes into it
    save_sharded(temporary_folder(out, name), trainer.model, trainer.optimizer, callback_modules(trainer.callbacks))
    whole = final or (epoch_end and any(cb.needs_whole_model for cb in trainer.callbacks))
    full = trainer.unsharded_model() if whole else None  # a collective: every process
    if not dist.is_main:
        return None
    if final:
        save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(tmp / "model.safetensors"))
    torch.save({**state, "sharded": True}, tmp / "state.pt")
    return commit_checkpoint(out, name, keep=trainer.cfg.keep_checkpoints)


def callback_modules(callbacks: Sequence[Any]) -> Dict[str, nn.Module]:
    """The callbacks' sharded modules (an EMA), named `<callback>.<name>` in the sharded checkpoint."""
    return {f"{cb.name}.{k}": m for cb in callbacks for k, m in cb.sharded_modules().items()}


def param_checksum(model: nn.Module) -> float:
    """The sum of every weight (float64): equal on every process after DDP; under FSDP the shards' sums
    are added up over the processes, so it is the whole model's sum everywhere."""
    if not is_sharded(model):
        return float(sum(p.detach().double().sum() for p in model.parameters()))
    params = list(model.parameters())
    local = torch.stack([p.detach().to_local().double().sum() for p in params]).sum()
    return float(all_reduce(local).item())
