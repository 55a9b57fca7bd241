"""Where a training run's numbers go, besides `metrics.jsonl` (always written, the source of truth):
TensorBoard event files (`tensorboard/`, PyTorch's SummaryWriter), `metrics.csv` (regenerated from the
JSON lines at every checkpoint, so it always agrees with them after a resume), and Weights & Biases
when asked for and installed. The training commands choose with `--log-to tensorboard,csv,wandb`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

LOG_TARGETS = ("tensorboard", "csv", "wandb")
_NOT_SCALARS = ("kind", "epoch", "step")


def parse_log_to(text: str) -> Tuple[str, ...]:
    """"tensorboard,csv" -> ("tensorboard", "csv"); "none" or "" -> (). Raises ValueError for an
    unknown target, naming the choices."""
    targets = tuple(t.strip() for t in str(text).split(",") if t.strip() and t.strip() != "none")
    unknown = [t for t in targets if t not in LOG_TARGETS]
    if unknown:
        raise ValueError(f"--log-to: unknown {', '.join(unknown)}; choose from {', '.join(LOG_TARGETS)} (comma-separated) "
                         f"or none")
    return targets


def jsonl_to_csv(jsonl: Path, out: Path) -> Optional[Path]:
    """Write the records of a JSON-lines file as CSV (the union of their keys as columns, first seen
    first), atomically. Returns `out`, or None when there is nothing to write."""
    if not jsonl.is_file():
        return None
    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    if not records:
        return None
    columns: Dict[str, None] = {}
    for r in records:
        columns.update(dict.fromkeys(r))
    tmp = out.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(records)
    os.replace(tmp, out)
    return out


class RunLog:
    """The run's log sinks (on the main process; no targets elsewhere: it then does nothing).
    `targets` from `parse_log_to`; `purge_step` discards TensorBoard events at and after that step (a
    resumed run's interrupted tail; 0 for a fresh run, whose folder may hold an older run's events);
    `config` goes to wandb. Raises ValueError when wandb is asked for but not installed."""

    def __init__(self, out_dir: Path, targets: Iterable[str], purge_step: Optional[int] = None,
                 config: Optional[Dict[str, Any]] = None) -> None:
        self.out_dir, self.targets = Path(out_dir), tuple(targets)
        self.tensorboard = self.wandb = None
        if "wandb" in self.targets:
            try:
                import wandb
            except ImportError:
                raise ValueError("--log-to wandb needs the wandb package (pip install wandb), or leave wandb out of "
                                 "--log-to") from None
            run_id = hashlib.sha256(str(self.out_dir.resolve()).encode()).hexdigest()[:16]  # a resume continues it
            self.wandb = wandb.init(project="zoo", dir=str(self.out_dir), config=config or {}, id=run_id,
                                    name=self.out_dir.name, resume="allow")
        if "tensorboard" in self.targets:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"), purge_step=purge_step)

    def write(self, record: Dict[str, Any]) -> None:
        """One record of metrics.jsonl: its numbers as scalars `<kind>/<name>` at its step."""
        step = int(record.get("step", 0))
        scalars = {k: float(v) for k, v in record.items()
                   if k not in _NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)}
        kind = record.get("kind", "step")
        if self.tensorboard is not None:
            for name, value in scalars.items():
                self.tensorboard.add_scalar(f"{kind}/{name}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in scalars.items()}, step=step)

    def checkpoint(self, metrics_jsonl: Path) -> None:
        """At each checkpoint: metrics.csv from the JSON lines, event files flushed."""
        if "csv" in self.targets:
            jsonl_to_csv(metrics_jsonl, self.out_dir / "metrics.csv")
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self, metrics_jsonl: Optional[Path] = None) -> None:
        """At the end: metrics.csv written once more (with `metrics_jsonl`), the sinks closed."""
        if metrics_jsonl is not None:
            self.checkpoint(metrics_jsonl)
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
