"""The docs agree with the code: every command's --help runs, and every flag the docs (README.md and
docs/*.md) show after `zoo <command>` exists on that command."""
import argparse
import re
from pathlib import Path

import pytest

from zoo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([name, "--help"])
    assert e.value.code == 0
    assert f"usage: zoo {name}" in capsys.readouterr().out


def test_every_flag_named_in_the_docs_exists():
    commands = subcommands()
    flags = {name: {s for a in p._actions for s in a.option_strings} for name, p in commands.items()}
    missing = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for m in re.finditer(r"\bzoo ([a-z][a-z-]*)((?:[^`|]|\|(?! ))*)", line):
                command, rest = m.group(1), m.group(2)
                if command not in commands:
                    continue
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                    if flag not in flags[command] and flag != "--help":
                        missing.append(f"{doc.name}:{number}: zoo {command} {flag}")
    assert not missing, "flags the docs name that the commands do not have:\n" + "\n".join(missing)


def test_job_functions_are_importable_from_zoo():
    import zoo

    for name in ("pretrain_mae", "finetune", "linear_probe", "knn"):
        assert callable(getattr(zoo, name)), name


def test_every_flag_anywhere_in_the_docs_belongs_to_something():
    """Any `--flag` in the docs is a zoo command's, a benchmark script's (benchmarks/*.py), or one of
    the few other tools' flags the docs show (torchrun, pytest, tensorboard)."""
    commands = subcommands()
    known = {s for p in commands.values() for a in p._actions for s in a.option_strings}
    for script in (ROOT / "benchmarks").glob("*.py"):
        known |= set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]*)\"", script.read_text(encoding="utf-8")))
    known |= {"--nproc_per_node", "--nnodes", "--node_rank", "--master_addr", "--master_port", "--durations",
              "--logdir", "--standalone", "--rdzv_backend", "--rdzv_endpoint", "--rdzv_id"}  # torchrun, pytest, tensorboard
    stray = [f"{doc.name}:{n}: {flag}" for doc in DOCS
             for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
             for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", line) if flag not in known]
    assert not stray, "flags the docs name that nothing has:\n" + "\n".join(stray)
