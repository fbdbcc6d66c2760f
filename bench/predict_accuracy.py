"""Predicted vs measured eager latency of the reference models (issue 4's accuracy table).

    python bench/predict_accuracy.py PROFILE.json

Predicts each model at batch 1 and 8 from the profile, then measures it eagerly three
times, interleaved, with torch.utils.benchmark at this process's thread count, and prints
a markdown table with the median, the range and the error. Not a test: it times things.
"""

import sys, statistics, torch
from calibration import load_calibration, models
from calibration.mapper import predict_latency
from calibration.cli import measure_latency_ms
cal = load_calibration(sys.argv[1])
cases = [(n, b) for n in models.MODELS for b in (1, 8)]
built = {}
for name, batch in cases:
    torch.manual_seed(0)
    model = models.MODELS[name]().eval(); x = models.example_input(name, batch)
    built[(name, batch)] = (model, x, predict_latency(model, x, cal).total_ms)
meas = {c: [] for c in cases}
for rep in range(3):
    for c in cases:
        model, x, _ = built[c]
        meas[c].append(measure_latency_ms(model, x, 0.5))
errs = []
print("| model | batch | predicted ms | measured ms (median of 3, range) | error |")
print("|---|---|---|---|---|")
for c in cases:
    p = built[c][2]; m = statistics.median(meas[c]); e = p / m - 1; errs.append(e)
    print(f"| {c[0]} | {c[1]} | {p:.3f} | {m:.3f} ({min(meas[c]):.3f}-{max(meas[c]):.3f}) | {100*e:+.1f}% |")
print(f"median |error| {100*statistics.median(abs(e) for e in errs):.1f}%, max {100*max(abs(e) for e in errs):.1f}%")
