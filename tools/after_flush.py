"""What a call of each op kind pays when the traffic before it has evicted the cores' caches.

    python tools/after_flush.py                 # read 4x the cores' L2s (over every thread) before each call
    python tools/after_flush.py --read-mb 64 --rounds 100

Each kind's call is the profile's ``after_evict`` call of it (a 16-channel 8x8 map, a 64-wide
row: ``measure.kernels.tiny_call``), so what it pays after the read
is not its data: it is timed right after a read of ``--read-mb`` MB, right after that read and a
view and an add (the dispatch path every call shares, warm again, as a forward keeps it), and
right after itself (its repeated time, what a benchmark measures). On the 2-vCPU Xeon VM a
batch norm paid +44 us after a 16.8 MB read and +24 with the shared path warm again, a 3x3 conv
+55 and +36. Prints the medians. Not a test: it times things. Run it alone
on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from calibration.measure.kernels import tiny_call
from calibration.specs import host
from calibration.specs.operations import AFTER_EVICT_KINDS


def tiny_calls() -> dict[str, Callable[[], object]]:
    """The profile's after_evict calls, one per op kind (``AFTER_EVICT_KINDS``)."""
    torch.manual_seed(0)
    return {kind: tiny_call(kind, torch.device("cpu")) for kind in AFTER_EVICT_KINDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--read-mb", type=float, default=None,
                        help="MB read before each call (default: 4x the cores' L2s over every thread, else 16)")
    parser.add_argument("--rounds", type=int, default=60, help="timed calls of each kind in each context (default 60)")
    args = parser.parse_args(argv)
    if args.rounds < 5:
        parser.error(f"--rounds {args.rounds}: at least 5")
    if args.read_mb is not None and args.read_mb <= 0:
        parser.error(f"--read-mb {args.read_mb}: a size in MB above 0")
    private = host.private_cache_bytes(host.cache_sizes(), torch.get_num_threads())
    read_bytes = int(args.read_mb * 1e6) if args.read_mb is not None else 4 * private if private else 16 << 20
    other = torch.ones(max(read_bytes // 4, 1))
    x = torch.randn(1, 16, 8, 8)

    def shared_path() -> None:
        x.flatten(1)
        x.add(1.0)

    print(f"{torch.get_num_threads()} threads; {read_bytes / 1e6:.1f} MB read before each call; medians of "
          f"{args.rounds} calls, us")
    print(f"{'op':18s} {'repeated':>9s} {'after the read':>15s} {'and the shared path':>20s}")
    with torch.inference_mode():
        for name, call in tiny_calls().items():
            for _ in range(5):
                call()
            after, shared, repeated = [], [], []
            for _ in range(args.rounds):
                other.sum()
                start = time.perf_counter()
                call()
                after.append(time.perf_counter() - start)
                other.sum()
                shared_path()
                start = time.perf_counter()
                call()
                shared.append(time.perf_counter() - start)
                call()
                start = time.perf_counter()
                call()
                repeated.append(time.perf_counter() - start)
            base = statistics.median(repeated) * 1e6
            print(f"{name:18s} {base:9.1f} {statistics.median(after) * 1e6 - base:+15.1f} "
                  f"{statistics.median(shared) * 1e6 - base:+20.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
