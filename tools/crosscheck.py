"""Cross-check the plugin's timings against torch.utils.benchmark on the same shapes.

    python tools/crosscheck.py [--repeats 3]

Alternates a quick calibration of the matmul and STREAM cases (through the plugin, in
this process) with torch.utils.benchmark.Timer.blocked_autorange on the same kernels and
thread count, and prints GFLOPS / GB/s side by side with the relative difference. Not a
test: it times things.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch.utils import benchmark as tb

from calibration import calibrate_hardware
from calibration.measure.kernels import build
from calibration.specs.operations import OPERATIONS

CHECKED = {
    "matmul[M=1024,K=1024,N=1024,path=aten]/float32/cpu": "gflops",
    "matmul[M=64,K=4096,N=1024,path=aten]/float32/cpu": "gflops",
}


def timer_rate(key: str, metric: str) -> float:
    op = key.split("[", 1)[0]
    case = next(c for c in OPERATIONS[op].cases(quick=True, device="cpu") if c.key == key)
    kernel = build(case)
    measurement = tb.Timer("kernel()", globals={"kernel": kernel},
                           num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=1.0)
    seconds = measurement.median
    return (case.flops if metric == "gflops" else case.bytes) / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    triad_key = None
    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as scratch:
            cal = calibrate_hardware(output_path=Path(scratch) / "p.json", operations=["matmul", "stream_triad"],
                                     quick=True)
        triad_key = max((k for k in cal.operation_profiles if k.startswith("stream_triad")),
                        key=lambda k: cal.operation_profiles[k].bytes)
        checks = {**CHECKED, triad_key: "gbps"}
        for key, metric in checks.items():
            plugin = getattr(cal.operation_profiles[key], metric)
            rows.setdefault(key, []).append((plugin, timer_rate(key, metric)))
    print(f"\n{'case':<56} {'plugin':>9} {'timer':>9} {'diff':>7}   (median of {args.repeats} alternations)")
    for key, pairs in rows.items():
        plugin = statistics.median(p for p, _ in pairs)
        timer = statistics.median(t for _, t in pairs)
        unit = "GB/s" if key.startswith("stream") else "GFLOPS"
        print(f"{key:<56} {plugin:9.1f} {timer:9.1f} {100 * (plugin / timer - 1):+6.1f}%  {unit}")


if __name__ == "__main__":
    main()
