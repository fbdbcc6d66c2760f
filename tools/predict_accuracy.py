"""Predicted against measured eager latency, with the accuracy protocol of a noisy machine.

    python tools/predict_accuracy.py PROFILE.json                    # the four reference models
    python tools/predict_accuracy.py PROFILE.json --heldout          # models never used for tuning
    python tools/predict_accuracy.py PROFILE.json --coverage         # ops neither set uses (nn.LSTM...)
    python tools/predict_accuracy.py PROFILE.json --without-exact    # drop entries the models hit exactly
    python tools/predict_accuracy.py PROFILE.json --json run1.json   # keep the numbers ...
    python tools/predict_accuracy.py PROFILE.json --compare run1.json  # ... and compare a second run

Predicts each model at batch 1 and 8 from the profile (steady state plus the allocator term
of the allocator this process runs under), then measures it in ``--repeats`` interleaved
rounds: in each round, for each model in turn, the profile's reference kernels are re-timed
and then the model, in the same window. Each case's error is reported raw and corrected by
the drift of its own window (median over rounds, with the range); a round whose references
ran outside x0.67-x1.5 of the profile is set aside, and a case with more than half its rounds
set aside (or other processes busy) reports no error. Steady-state accuracy is meant to be
checked under a caching allocator (``MALLOC_MMAP_THRESHOLD_=4000000000
MALLOC_TRIM_THRESHOLD_=8000000000``). Not a test: it times things.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from calibration import load_calibration
from calibration.measure import canary
from calibration.measure.model_timing import (
    STATE_WAIT_SECONDS,
    Measurement,
    measure_rounds,
    other_cpus_since,
    reference_kernels,
)
from calibration.predict import coverage_models, heldout_models, models
from calibration.predict.mapper import mapper_for
from calibration.predict.plan import partition
from calibration.predict.references import own_references
from calibration.specs import host


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




def summarize(label: str, errors: list[float]) -> None:
    if errors:
        print(f"{label}: median |error| {100 * statistics.median(abs(e) for e in errors):.1f}%, "
              f"max {100 * max(abs(e) for e in errors):.1f}% over {len(errors)} cases")


def write_rows(path: str, rows: dict) -> None:
    with open(path, "w") as out:
        json.dump(rows, out, indent=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--heldout", action="store_true", help="the held-out models instead of the reference ones")
    which.add_argument("--coverage", action="store_true",
                       help="the coverage models (transformers, an LSTM, UNet ops, conv1d, 1x7 and dilated "
                            "convs) instead of the reference ones")
    parser.add_argument("--without-exact", action="store_true", help="drop entries matching a kernel exactly")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default: 5)")
    parser.add_argument("--models", help="comma-separated subset")
    parser.add_argument("--json", metavar="PATH", help="write the per-case numbers here")
    parser.add_argument("--compare", metavar="PATH", help="a --json file of an earlier run: print the differences")
    args = parser.parse_args()

    registry, make_input = ((heldout_models.HELDOUT, heldout_models.heldout_input) if args.heldout
                            else (coverage_models.COVERAGE, coverage_models.coverage_input) if args.coverage
                            else (models.MODELS, models.example_input))
    names = args.models.split(",") if args.models else list(registry)
    if unknown := [name for name in names if name not in registry]:
        parser.error(f"--models: unknown model {', '.join(map(repr, unknown))}; "
                     f"this set has {', '.join(registry)}")
    batches = args.batches.split(",")
    if bad := [b for b in batches if not (b.isdigit() and int(b) > 0)]:
        parser.error(f"--batches: {', '.join(map(repr, bad))} is not a positive integer; give e.g. 1,8")
    cal = load_calibration(args.profile)
    cases = [(name, int(b)) for name in names for b in batches]
    built = {}
    for name, batch in cases:
        torch.manual_seed(0)
        built[(name, batch)] = (registry[name]().eval(), make_input(name, batch), None)
    # the drift references come from the whole profile: --without-exact hides entries from the
    # mapper, not from the yardstick (a reference re-timed says how fast the machine runs now)
    full = cal
    if args.without_exact:
        cal, dropped = _without_exact(cal, built)
        print(f"dropped {len(dropped)} exactly matching entries: {', '.join(dropped) or 'none'}\n")
    parts = {c: partition(m, x, cal) for c, (m, x, _) in built.items()}
    mapper = mapper_for(cal)
    predicted = {c: mapper.estimate(parts[c]) for c in cases}
    shared: dict = {}  # each entry's operands built once for every case
    kernels = {c: reference_kernels(full, own_references(parts[c], predicted[c], full), shared) for c in cases}

    rounds: dict[tuple[str, int], list] = {c: [] for c in cases}
    before = host.cpu_times()
    for _ in range(args.repeats):
        for c in cases:
            model, x, _ = built[c]
            rounds[c] += measure_rounds(model, x, full, rounds=1, kernels=kernels[c]).rounds
    busy_cpus = other_cpus_since(before)

    rows, raw_all, corrected_all = {}, [], []
    print(f"| model | batch | predicted ms (steady + faults) | measured ms (median of the {args.repeats} rounds "
          "less those set aside, range) "
          "| drift | raw error | drift-corrected error (range) |")
    print("|---|---|---|---|---|---|---|")
    for c in cases:
        estimate, m = predicted[c], Measurement(tuple(rounds[c]), busy_cpus)
        times = [r.model_ms for r in m.kept]
        refusal = m.refusal(cal)
        weights = estimate.time_by_class()
        raw, corrected = m.errors(estimate.total_ms, weights)
        faults = estimate.allocator.ms if estimate.allocator and estimate.allocator.ms else 0.0
        factors = [f for r in m.kept if (f := r.factor_for(weights)) is not None]
        drift = f"x{statistics.median(factors):.2f}" if factors else "-"
        aside = f"; {len(m.rounds) - len(m.kept)} set aside" if len(m.kept) < len(m.rounds) else ""
        if refusal:
            errors = f"not reported: {refusal} | -"
        else:
            raw_all.append(statistics.median(raw))
            errors = f"{100 * statistics.median(raw):+.1f}% | "
            if corrected:
                corrected_all.append(statistics.median(corrected))
                errors += (f"{100 * statistics.median(corrected):+.1f}% "
                           f"({100 * min(corrected):+.1f} to {100 * max(corrected):+.1f})")
            else:
                errors += "-"
        print(f"| {c[0]} | {c[1]} | {estimate.total_ms:.3f} ({estimate.steady_ms:.3f} + {faults:.3f}) | "
              f"{m.model_ms:.3f} ({min(times):.3f}-{max(times):.3f}{aside}) | {drift} | {errors} |")
        rows[f"{c[0]}/b{c[1]}"] = {
            "predicted_ms": estimate.total_ms, "steady_ms": estimate.steady_ms, "measured_ms": m.model_ms,
            "rounds_ms": times, "set_aside": len(m.rounds) - len(m.kept), "drift": factors, "refused": refusal,
            "error_raw": None if refusal else statistics.median(raw),
            "error_corrected": None if refusal or not corrected else statistics.median(corrected),
            # what the drift stood on: each reference's now / profile in every kept round, its
            # class and the predicted ms it stands for (0 for the generic ones)
            "time_by_class_ms": weights,
            "references": m.references(),
            # each round's host-state canary over the profile's fastest (measure.canary), and its wait
            "state_ratios": [r.state_ratio for r in m.rounds], "waited_s": [r.waited_s for r in m.rounds]}
    print(f"\nthreads {torch.get_num_threads()}; other processes kept {busy_cpus} CPUs busy during the rounds")
    every = [r for c in cases for r in rounds[c]]
    if (waited := [r for r in every if r.waited_s > 0]):
        slow = sum(r.state_ratio is not None and r.state_ratio > canary.SLOW for r in every)
        print(f"{len(waited)} of {len(every)} rounds waited for the host's vCPUs to be in the profile's state "
              f"({sum(r.waited_s for r in waited):.0f} s in all, measure.canary); {slow} ran in the slow state "
              f"after {STATE_WAIT_SECONDS:.0f} s")
    for label, errors in (("raw", raw_all), ("drift-corrected", corrected_all)):
        summarize(label, errors)
    if args.json:
        write_rows(args.json, rows)
    if args.compare:
        with open(args.compare) as earlier_file:
            earlier = json.load(earlier_file)
        diffs = []
        for key, row in rows.items():
            before = earlier.get(key, {}).get("error_corrected")
            if before is not None and row["error_corrected"] is not None:
                diffs.append((key, 100 * (row["error_corrected"] - before)))
        if diffs:
            print("drift-corrected error, this run minus the earlier one (points): "
                  + ", ".join(f"{k} {d:+.1f}" for k, d in diffs)
                  + f"; largest |difference| {max(abs(d) for _, d in diffs):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
