"""Predicted vs measured eager latency (issue 4's accuracy table).

    python tools/predict_accuracy.py PROFILE.json                    # the four reference models
    python tools/predict_accuracy.py PROFILE.json --heldout          # models never used for tuning
    python tools/predict_accuracy.py PROFILE.json --without-exact    # drop entries the models hit exactly

Predicts each model at batch 1 and 8 from the profile, then measures it eagerly ``--repeats``
times, interleaved, with torch.utils.benchmark at this process's thread count, and prints a
markdown table with the median, the range and the error. ``--without-exact`` first removes
every operation entry whose parameters equal a kernel of the predicted models, so every
prediction interpolates between other sizes. Not a test: it times things.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from calibration import load_calibration
from calibration.measure.model_timing import drift, format_drift, measure_latency_ms
from calibration.predict import heldout_models, models
from calibration.predict.mapper import predict_latency
from calibration.predict.plan import partition


def _without_exact(cal, built):
    """The profile minus every operation entry some kernel of the built models matches exactly."""
    hit = set()
    for model, x, _ in built.values():
        for sg in partition(model, x).subgraphs:
            for node in sg.nodes:
                if node.operation and (entry := cal.get_operation(node.operation, dtype=node.dtype or "float32",
                                                                   device="cpu", **node.params)):
                    hit.add(entry.key)
    kept = {key: entry for key, entry in cal.operation_profiles.items() if key not in hit}
    return cal.model_copy(update={"operation_profiles": kept}), sorted(hit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--heldout", action="store_true", help="the held-out models instead of the reference ones")
    parser.add_argument("--without-exact", action="store_true", help="drop entries matching a kernel exactly")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", help="comma-separated subset")
    args = parser.parse_args()

    cal = load_calibration(args.profile)
    registry, make_input = ((heldout_models.HELDOUT, heldout_models.heldout_input) if args.heldout
                            else (models.MODELS, models.example_input))
    names = args.models.split(",") if args.models else list(registry)
    cases = [(name, int(b)) for name in names for b in args.batches.split(",")]
    built = {}
    for name, batch in cases:
        torch.manual_seed(0)
        built[(name, batch)] = (registry[name]().eval(), make_input(name, batch), None)
    if args.without_exact:
        cal, dropped = _without_exact(cal, built)
        print(f"dropped {len(dropped)} exactly matching entries: {', '.join(dropped) or 'none'}\n")
    built = {c: (m, x, predict_latency(m, x, cal).total_ms) for c, (m, x, _) in built.items()}

    measured: dict[tuple[str, int], list[float]] = {c: [] for c in cases}
    before = format_drift(drift(cal))
    for _ in range(args.repeats):
        for c in cases:
            model, x, _ = built[c]
            measured[c].append(measure_latency_ms(model, x, 0.5))

    errors = []
    print(f"| model | batch | predicted ms | measured ms (median of {args.repeats}, range) | error |")
    print("|---|---|---|---|---|")
    for c in cases:
        predicted, times = built[c][2], measured[c]
        median = statistics.median(times)
        errors.append(predicted / median - 1)
        print(f"| {c[0]} | {c[1]} | {predicted:.3f} | {median:.3f} ({min(times):.3f}-{max(times):.3f}) "
              f"| {100 * errors[-1]:+.1f}% |")
    print(f"\nmedian |error| {100 * statistics.median(abs(e) for e in errors):.1f}%, "
          f"max {100 * max(abs(e) for e in errors):.1f}%, threads {torch.get_num_threads()}")
    print(f"reference cases now vs in the profile (1.00: the machine runs as it did when calibrated): "
          f"before {before}; after {format_drift(drift(cal))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
