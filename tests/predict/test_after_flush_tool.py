"""tools/after_flush.py: a tiny call of each op kind after the caches were evicted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "after_flush.py"
spec = importlib.util.spec_from_file_location("after_flush", TOOL)
after_flush = importlib.util.module_from_spec(spec)
spec.loader.exec_module(after_flush)


def test_each_kind_s_call_runs_its_own_op_on_a_tiny_input():
    calls = after_flush.tiny_calls()
    assert {"conv2d", "linear", "batchnorm", "relu", "add"} <= calls.keys()
    with torch.inference_mode():
        outs = {name: call() for name, call in calls.items()}
    assert outs["conv2d"].shape == (1, 16, 8, 8) and outs["maxpool"].shape == (1, 16, 4, 4)
    assert outs["linear"].shape == (1, 64) and outs["global_avgpool"].shape == (1, 16, 1, 1)
    assert all(out.numel() <= 1024 for out in outs.values())  # what they pay after a flush is not their data


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "2"], "--rounds 2: at least 5"),
    (["--read-mb", "0"], "--read-mb 0.0: a size in MB above 0"),
    (["--read-mb", "-3"], "--read-mb -3.0: a size in MB above 0"),
])
def test_bad_arguments_are_refused_with_the_value_and_what_is_allowed(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        after_flush.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.times_kernels
def test_a_short_run_prints_a_row_per_kind(capsys):
    assert after_flush.main(["--read-mb", "1", "--rounds", "5"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith(f"{torch.get_num_threads()} threads; 1.0 MB read")
    assert [row.split()[0] for row in rows[2:]][:3] == ["conv2d", "linear", "batchnorm"]
    assert len(rows) == 2 + len(after_flush.tiny_calls())
