"""The mapper's fused mode against what torch.compile (inductor, freezing) makes of a model.

    python tools/fused_vs_compile.py PROFILE.json                 # the four reference models, batch 1 and 8
    python tools/fused_vs_compile.py PROFILE.json --models resnet18 --batches 1

For each case: the eager and fused predictions from the profile, then the eager model and its
compiled form measured in interleaved rounds with the profile's reference kernels re-timed
in each window (the accuracy protocol of tools/predict_accuracy.py). Prints the fused
prediction's error against the compiled model, drift-corrected, and the speedup each side
sees (eager / fused predicted, eager / compiled measured). Compile time is not timed. Not a
test: it times things, and compiling takes a while on a small machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from predict_accuracy import summarize, write_rows  # this directory: the tools run as scripts

from calibration import load_calibration
from calibration.measure.model_timing import Measurement, measure_rounds, other_cpus_since, reference_kernels
from calibration.predict import models
from calibration.predict.mapper import CPUMapper
from calibration.predict.plan import partition
from calibration.predict.references import own_references
from calibration.specs import host


def compiled_model(model: torch.nn.Module, x: torch.Tensor):
    """torch.compile with inductor's freezing (weights as constants: BN folded into convs,
    epilogues fused into the oneDNN calls), compiled here by one call."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, dynamic=False)
    with inductor_config.patch(freezing=True), torch.no_grad():
        start = time.perf_counter()
        compiled(x)
        seconds = time.perf_counter() - start
    return compiled, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--models", help="comma-separated subset of the reference models")
    parser.add_argument("--json", metavar="PATH", help="write the per-case numbers here")
    args = parser.parse_args()

    cal = load_calibration(args.profile)
    names = args.models.split(",") if args.models else list(models.MODELS)
    cases = [(name, int(b)) for name in names for b in args.batches.split(",")]
    mapper = CPUMapper(cal)
    built, predicted, kernels, shared = {}, {}, {}, {}
    for case in cases:
        torch.manual_seed(0)
        model, x = models.MODELS[case[0]]().eval(), models.example_input(case[0], case[1])
        part = partition(model, x, cal)
        predicted[case] = (mapper.estimate(part, "eager"), mapper.estimate(part, "fused"))
        kernels[case] = reference_kernels(cal, own_references(part, predicted[case][0], cal), shared)
        compiled, seconds = compiled_model(model, x)
        built[case] = (model, compiled, x)
        print(f"compiled {case[0]} b{case[1]} in {seconds:.0f} s", file=sys.stderr)

    eager_rounds = {c: [] for c in cases}
    compiled_rounds = {c: [] for c in cases}
    before = host.cpu_times()
    for _ in range(args.repeats):
        for c in cases:
            model, compiled, x = built[c]
            eager_rounds[c] += measure_rounds(model, x, cal, rounds=1, kernels=kernels[c]).rounds
            compiled_rounds[c] += measure_rounds(compiled, x, cal, rounds=1, kernels=kernels[c]).rounds
    busy = other_cpus_since(before)

    print("| model | batch | eager predicted / measured ms | fused predicted ms | compiled measured ms "
          "| fused vs compiled, drift-corrected (raw) | speedup predicted / measured |")
    print("|---|---|---|---|---|---|---|")
    rows, errors = {}, []
    for c in cases:
        eager_estimate, fused_estimate = predicted[c]
        eager, compiled = Measurement(tuple(eager_rounds[c]), busy), Measurement(tuple(compiled_rounds[c]), busy)
        refusal = compiled.refusal(cal) or eager.refusal(cal)
        raw, corrected = compiled.errors(fused_estimate.total_ms, fused_estimate.time_by_class())
        error = statistics.median(corrected) if corrected else statistics.median(raw)
        speedup_predicted = eager_estimate.total_ms / fused_estimate.total_ms
        speedup_measured = eager.model_ms / compiled.model_ms
        text = "not reported: " + refusal if refusal else f"{100 * error:+.1f}% ({100 * statistics.median(raw):+.1f}%)"
        if not refusal:
            errors.append(error)
        print(f"| {c[0]} | {c[1]} | {eager_estimate.total_ms:.3f} / {eager.model_ms:.3f} "
              f"| {fused_estimate.total_ms:.3f} | {compiled.model_ms:.3f} | {text} "
              f"| {speedup_predicted:.2f} / {speedup_measured:.2f} |")
        rows[f"{c[0]}/b{c[1]}"] = {
            "eager_predicted_ms": eager_estimate.total_ms, "eager_measured_ms": eager.model_ms,
            "fused_predicted_ms": fused_estimate.total_ms, "compiled_measured_ms": compiled.model_ms,
            "error_corrected": None if refusal else error, "refused": refusal,
            "speedup_predicted": speedup_predicted, "speedup_measured": speedup_measured}
    print()
    summarize("fused vs compiled", errors)
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
