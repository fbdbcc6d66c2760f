"""The catalog of bad input to ``python -m calibration``: every case exits 2 with one line
``error: ...`` on stderr naming the value or field at fault, no traceback, and leaves every
file in its folder as it was (no profile overwritten, no stray temporary file).

The commands run in this process (``main(argv)``) from a folder of their own; ``pytest.main``
is replaced by a stub that fails the case, since bad input must be refused before any
benchmark starts. A few cases need a process of their own: a closed pipe, an endless file.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from factories import BAD_PROFILES, assert_one_line_error, full_profile, metadata, record, snapshot

from calibration.cli import main
from calibration.measure.fold import fold

USER_MODELS = '''
import torch
from torch import nn


def needs_args(width):
    return nn.Linear(width, width)


def raises():
    raise RuntimeError("weights file missing")


class Boom(nn.Module):
    def forward(self, x):
        raise ValueError("this model is not implemented")


def forward_raises():
    return Boom()


class Two(nn.Module):
    def forward(self, x, y):
        return x + y


def two_inputs():
    return Two()


def mlp784():
    return nn.Sequential(nn.Linear(784, 16), nn.ReLU())


def embedding():
    return nn.Embedding(10, 4)


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x.relu()
        return x


def untraceable():
    return Branchy()


def not_a_module():
    return "resnet"
'''

LONG_NAME = "x" * 300 + ".json"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a good profile, profiles lacking ceilings, files that are not profiles,
    a FIFO, folders, and a module of misbehaving user models; the current directory."""
    full_profile().save(tmp_path / "p.json")
    fold([record("dispatch", 0.002, n=1)], metadata()).save(tmp_path / "dispatch_only.json")
    fold([record("matmul", 20.0, M=1024, K=1024, N=1024, path="aten"), record("dispatch", 0.002, n=1)],
         metadata()).save(tmp_path / "compute_only.json")
    (tmp_path / "notes.txt").write_text("my notes, not a profile\n")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "usermodels_cli.py").write_text(USER_MODELS)
    (tmp_path / "broken_syntax_cli.py").write_text("def model(:\n    pass\n")
    for bad in BAD_PROFILES:
        bad.write(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("usermodels_cli", "broken_syntax_cli"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


@pytest.fixture
def cli(workdir, monkeypatch, capsys):
    def no_benchmark(*args, **kwargs):
        raise AssertionError(f"a benchmark run started: pytest.main{args}")

    monkeypatch.setattr(pytest, "main", no_benchmark)

    def run(argv: list[str]) -> tuple[int, str, str]:
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


RUN = ["run", "--quick", "--operations", "dispatch"]
MODEL = "usermodels_cli:"

CASES = [
    # argparse, for every command
    ("no-command", [], ["COMMAND"]),
    ("unknown-command", ["nosuch"], ["'nosuch'"]),
    ("schema-extra-argument", ["schema", "extra"], ["extra"]),
    ("show-no-profile", ["show"], ["PROFILE"]),
    ("show-missing-file", ["show", "nope.json"], ["nope.json", "no such profile"]),
    ("show-directory", ["show", "outdir"], ["outdir"]),
    ("show-long-name", ["show", LONG_NAME], [LONG_NAME[:20]]),
    # run: the output
    ("run-no-output", RUN, ["--output"]),
    ("run-output-empty", [*RUN, "-o", ""], ["--output", "''"]),
    ("run-output-directory", [*RUN, "-o", "outdir"], ["outdir", "directory"]),
    ("run-output-trailing-slash", [*RUN, "-o", "newdir/"], ["newdir/"]),
    ("run-output-parent-missing", [*RUN, "-o", "missing/p.json"], ["missing", "does not exist"]),
    ("run-output-fifo", [*RUN, "-o", "fifo"], ["fifo", "not a regular file"]),
    ("run-output-not-a-profile", [*RUN, "-o", "notes.txt"], ["notes.txt", "not a calibration profile"]),
    ("run-output-name-too-long", [*RUN, "-o", LONG_NAME], ["too long"]),
    # run: the other options
    ("run-threads-zero", [*RUN, "-o", "o.json", "--threads", "0"], ["--threads", "'0'"]),
    ("run-threads-a-million", [*RUN, "-o", "o.json", "--threads", "1000000"], ["'1000000'", "per CPU"]),
    ("run-passthrough-plugin-off", [*RUN, "-o", "o.json", "--", "-p", "no:calibration.plugin"],
     ["no:calibration.plugin"]),
    ("run-device-tpu", [*RUN, "-o", "o.json", "--device", "tpu"], ["'tpu'"]),
    ("run-windows-three", [*RUN, "-o", "o.json", "--windows", "3"], ["--windows", "'3'", "allowed: 1", "or 2"]),
    ("run-windows-passthrough", [*RUN, "-o", "o.json", "--", "--calibrate-windows=1"],
     ["--calibrate-windows", "give it as an option of run"]),
    ("run-peak-negative", [*RUN, "-o", "o.json", "--peak-gflops", "-1"], ["'-1'"]),
    ("run-peak-duplicate-dtype", [*RUN, "-o", "o.json", "--peak-gflops", "float32=1,float32=2"], ["float32"]),
    ("run-bandwidth-nan", [*RUN, "-o", "o.json", "--peak-bandwidth", "nan"], ["'nan'"]),
    ("run-operation-unknown", ["run", "-o", "o.json", "--operations", "convv"], ["'convv'"]),
    ("run-operations-none-alone", ["run", "-o", "o.json", "--operations", "none"], ["none"]),
    ("run-operations-none-and-more", ["run", "-o", "o.json", "--operations", "none,matmul"], ["none"]),
    ("run-fusion-unknown", [*RUN, "-o", "o.json", "--fusion-patterns", "convs"], ["'convs'"]),
    ("run-hardware-empty", [*RUN, "-o", "o.json", "--hardware", ""], ["--hardware", "''"]),
    ("run-bench-dir-missing", [*RUN, "-o", "o.json", "--bench-dir", "nodir"], ["nodir"]),
    ("run-bench-dir-file", [*RUN, "-o", "o.json", "--bench-dir", "notes.txt"], ["notes.txt"]),
    ("run-bench-dir-no-cases", [*RUN, "-o", "o.json", "--bench-dir", "emptydir"], ["emptydir"]),
    ("run-passthrough-output", [*RUN, "-o", "o.json", "--", "--calibrate-out=q.json"], ["--calibrate-out"]),
    ("run-passthrough-benchmark-json", [*RUN, "-o", "o.json", "--", "--benchmark-json=o.json"], ["o.json"]),
    # plot
    ("plot-output-directory", ["plot", "p.json", "-o", "outdir"], ["outdir", "directory"]),
    ("plot-output-no-extension", ["plot", "p.json", "-o", "roofline"], ["roofline", "png"]),
    ("plot-output-profile", ["plot", "p.json", "-o", "p.json"], ["json"]),
    ("plot-output-parent-missing", ["plot", "p.json", "-o", "missing/r.png"], ["missing"]),
    ("plot-dtype-unknown", ["plot", "p.json", "-o", "r.png", "--dtype", "float99"], ["float99"]),
    ("plot-compare-missing", ["plot", "p.json", "-o", "r.png", "--compare", "nope.json"], ["nope.json"]),
    # compare
    ("compare-threshold-word", ["compare", "p.json", "p.json", "--threshold", "abc"], ["'abc'"]),
    ("compare-threshold-negative", ["compare", "p.json", "p.json", "--threshold", "-5"], ["'-5'"]),
    ("compare-alpha-one", ["compare", "p.json", "p.json", "--alpha", "1"], ["'1'"]),
    ("compare-metric-unknown", ["compare", "p.json", "p.json", "--metric", "power"], ["'power'"]),
    ("compare-format-unknown", ["compare", "p.json", "p.json", "--format", "xml"], ["'xml'"]),
    ("compare-missing", ["compare", "p.json", "nope.json"], ["nope.json"]),
    ("compare-nothing-in-common", ["compare", "p.json", "dispatch_only.json", "--metric", "speedup"], ["common"]),
    # merge
    ("merge-no-output", ["merge", "p.json", "p.json", "p.json"], ["--output"]),
    ("merge-two-profiles", ["merge", "-o", "m.json", "p.json", "dispatch_only.json"], ["at least 3", "got 2"]),
    ("merge-missing", ["merge", "-o", "m.json", "p.json", "p.json", "nope.json"], ["nope.json"]),
    ("merge-not-a-profile", ["merge", "-o", "m.json", "p.json", "p.json", "notes.txt"], ["notes.txt"]),
    ("merge-output-not-a-profile", ["merge", "-o", "notes.txt", "p.json", "p.json", "p.json"],
     ["notes.txt", "not a calibration profile"]),
    ("merge-output-directory", ["merge", "-o", "outdir", "p.json", "p.json", "p.json"], ["outdir", "directory"]),
    # partition and predict: the model
    ("model-unknown", ["partition", "--model", "nosuch"], ["'nosuch'"]),
    ("model-module-missing", ["partition", "--model", "nosuchmodule:f", "--input-shape", "4"], ["nosuchmodule"]),
    ("model-attribute-missing", ["partition", "--model", MODEL + "nosuch", "--input-shape", "4"], ["nosuch"]),
    ("model-syntax-error", ["partition", "--model", "broken_syntax_cli:model", "--input-shape", "4"],
     ["broken_syntax_cli", "SyntaxError"]),
    ("model-factory-raises", ["partition", "--model", MODEL + "raises", "--input-shape", "4"],
     ["raises", "weights file missing"]),
    ("model-factory-needs-arguments", ["partition", "--model", MODEL + "needs_args", "--input-shape", "4"],
     ["needs_args", "width"]),
    ("model-not-a-module", ["partition", "--model", MODEL + "not_a_module", "--input-shape", "4"], ["str"]),
    ("model-forward-raises", ["partition", "--model", MODEL + "forward_raises", "--input-shape", "4"],
     ["this model is not implemented"]),
    ("model-two-inputs", ["partition", "--model", MODEL + "two_inputs", "--input-shape", "4"], ["y"]),
    ("model-wrong-shape", ["partition", "--model", MODEL + "mlp784", "--input-shape", "5"], ["(1, 5)"]),
    ("model-wrong-dtype", ["partition", "--model", MODEL + "embedding", "--input-shape", "4"], ["float32"]),
    ("model-untraceable", ["partition", "--model", MODEL + "untraceable", "--input-shape", "4"], ["trace"]),
    ("model-input-dtype-unknown", ["partition", "--model", MODEL + "mlp784", "--input-shape", "784",
                                   "--input-dtype", "float99"], ["'float99'"]),
    ("model-input-shape-for-a-registered-model", ["partition", "--model", "mlp", "--input-shape", "5"],
     ["--input-shape"]),
    ("model-input-too-large", ["partition", "--model", MODEL + "mlp784", "--input-shape", "100000,100000,100000"],
     ["GiB"]),
    ("model-input-shape-word", ["partition", "--model", MODEL + "mlp784", "--input-shape", "3,x"], ["'3,x'"]),
    ("model-batch-zero", ["predict", "--model", "mlp", "--profile", "p.json", "--batch", "0"], ["'0'"]),
    ("predict-mode-unknown", ["predict", "--model", "mlp", "--profile", "p.json", "--mode", "fast"], ["'fast'"]),
    # predict: a profile that cannot support a prediction
    ("predict-profile-without-ceilings", ["predict", "--model", "mlp", "--profile", "dispatch_only.json"],
     ["dispatch_only.json", "compute ceiling"]),
    ("predict-profile-without-bandwidth", ["predict", "--model", "mlp", "--profile", "compute_only.json"],
     ["compute_only.json", "bandwidth"]),
    ("predict-profile-missing", ["predict", "--model", "mlp", "--profile", "nope.json"], ["nope.json"]),
]


@pytest.mark.parametrize(("argv", "named"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_exits_2_with_one_line(cli, workdir, argv, named):
    before = snapshot(workdir)
    code, _out, err = cli(argv)
    assert code == 2, err
    assert_one_line_error(err, *named)
    assert snapshot(workdir) == before


# Every malformed file through the command that only reads it, and one file per cause of
# failure through every other command that reads profiles.
ONE_PER_CAUSE = ("median-infinity", "samples-negative", "nested-metadata", "rounds-5000-digits", "param-wrong-type",
                 "legacy-fused-zero", "legacy-fusion-profiles-list", "legacy-peak-negative")
READERS = {
    "compare-base": lambda f: ["compare", f, "p.json"],
    "compare-new": lambda f: ["compare", "p.json", f],
    "plot": lambda f: ["plot", f, "-o", "r.png"],
    "plot-compare": lambda f: ["plot", "p.json", "-o", "r.png", "--compare", f],
    "partition": lambda f: ["partition", "--model", "mlp", "--profile", f],
    "predict": lambda f: ["predict", "--model", "mlp", "--profile", f],
    "merge": lambda f: ["merge", "-o", "m.json", "p.json", "p.json", f],
}
PROFILE_CASES = [pytest.param(["show", f"{bad.id}.json"], bad.names, id=f"show-{bad.id}") for bad in BAD_PROFILES] + [
    pytest.param(argv(f"{bad.id}.json"), bad.names, id=f"{reader}-{bad.id}")
    for reader, argv in READERS.items() for bad in BAD_PROFILES if bad.id in ONE_PER_CAUSE
]


@pytest.mark.parametrize(("argv", "named"), PROFILE_CASES)
def test_a_malformed_profile_exits_2_with_one_line(cli, workdir, argv, named):
    before = snapshot(workdir)
    code, _out, err = cli(argv)
    assert code == 2, err
    assert_one_line_error(err, named)
    assert snapshot(workdir) == before


# --------------------------------------------------------------------------- in a process of their own


def _one_gib_of_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_show_of_an_endless_file_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "calibration", "show", "/dev/zero"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, preexec_fn=_one_gib_of_memory)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, "/dev/zero", "larger than")


@pytest.fixture(scope="module")
def big_profile(tmp_path_factory) -> Path:
    """A profile whose summary and comparison are far longer than a pipe's buffer."""
    path = tmp_path_factory.mktemp("big") / "big.json"
    fold([record("stream_triad", 0.01 + n / 1e6, n=n) for n in range(1024, 1024 + 600)], metadata()).save(path)
    return path


@pytest.mark.parametrize(
    "argv",
    [["show", "big.json"], ["compare", "big.json", "big.json", "--format", "json"]],
    ids=["show", "compare"],
)
def test_a_reader_that_stops_reading_ends_the_command_quietly(big_profile, argv):
    """``... | head -1``: the rest of the output is dropped, the status is the command's own."""
    proc = subprocess.Popen([sys.executable, "-m", "calibration", *argv], cwd=big_profile.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert err == "", err


def test_the_catalog_names_each_case_once():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))
