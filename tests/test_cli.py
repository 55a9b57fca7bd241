"""The `zoo` command line: list and info."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import main


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_all_and_by_pattern(capsys):
    rc, out, _ = run(capsys, "list")
    assert rc == 0 and "vit_base_patch16_224" in out and "deit_s" in out and "\n29 models" in out
    rc, out, _ = run(capsys, "list", "deit*distilled*")
    assert rc == 0 and out.count("distilled_patch16") == 4 and "\n4 models" in out
    rc, out, _ = run(capsys, "list", "nothing*")
    assert rc == 1 and "no models match" in out


def test_list_pretrained_shows_one_row_per_tag(capsys):
    rc, out, _ = run(capsys, "list", "vit_base_patch16_224", "--pretrained")
    assert rc == 0
    assert "vit_base_patch16_224.mae" in out and "cc-by-nc-4.0" in out and "85.1" in out
    assert "9 weight tags for 1 models" in out


def test_info_reports_params_gmacs_input_and_tags(capsys):
    rc, out, _ = run(capsys, "info", "vit_b_16")
    assert rc == 0
    assert "86,567,656" in out
    assert "GMACs        17.56 per image at 3x224x224" in out
    assert "mean (0.5, 0.5, 0.5)" in out and "crop_pct 0.9" in out
    assert "augreg2_in21k_ft_in1k (default)" in out and "timm/vit_base_patch16_224.mae" in out
    rc, out, _ = run(capsys, "info", "deit_s", "--json")
    data = json.loads(out)
    assert data["params"] == 22050664 and round(data["gmacs"], 2) == 4.60
    assert data["weights"]["fb_in1k"]["top1"] == 79.9


def test_unknown_model_is_a_clean_error(capsys):
    rc, out, err = run(capsys, "info", "deit_smal")
    assert rc == 2 and out == ""
    assert "unknown model 'deit_smal'" in err and "deit_small_patch16_224" in err


def test_console_script_and_module_entry_point():
    script = Path(sys.executable).with_name("zoo")  # installed next to this interpreter by pip
    for cmd in ([str(script), "--help"], [sys.executable, "-m", "zoo", "--help"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "list" in proc.stdout and "info" in proc.stdout


@pytest.mark.parametrize("argv", [["list", "--help"], ["info", "--help"]])
def test_subcommand_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and "usage: zoo" in capsys.readouterr().out
