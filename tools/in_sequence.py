"""Each call of a model's forward timed in its place against the same call repeated alone.

    python tools/in_sequence.py resnet18 --batch 1
    python tools/in_sequence.py small_cnn --batch 8 --profile profiles/full.json --json calls.json

The model's traced graph is run call by call, each call on the outputs the calls before it
made in the same forward, a timer around each call (``--rounds`` rounds of ``--replays``
forwards; each call's median), and each call is then repeated alone on the arguments one
forward gave it (``--repeats`` timed calls after two untimed ones; its median), as a benchmark
times it. The difference is what a call pays for running inside the forward. (Until
2026-12-06 the forward was replayed on the arguments captured once, so every call read an
input a whole forward old; the memory-bound calls' ratios it reported, x2.1-2.4 on a 2-vCPU
EPYC VM and x1.7-3.4 for MobileNet-V2 b8's batch norms and ReLU6s on another, overstate.) With
``--profile`` each call's prediction (the mapper's kernel estimate, its after_busy extra
included) stands beside both. Prints the sums by operation, the calls that lose most and the
model's own forward (:func:`forward_ms`: the calls' medians sum to less than it); not a test:
it times things. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.fx as fx

from calibration.predict import coverage_models, heldout_models, models
from calibration.predict.trace import trace


@dataclass
class Call:
    name: str
    op: str  # the callee: an nn.Module class, a function or a method name
    in_sequence_ms: float
    alone_ms: float
    predicted_ms: float | None = None

    @property
    def extra_ms(self) -> float:
        return self.in_sequence_ms - self.alone_ms


def build(name: str, batch: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    for registry, make_input in ((heldout_models.HELDOUT, heldout_models.heldout_input),
                                 (coverage_models.COVERAGE, coverage_models.coverage_input)):
        if name in registry:
            x = make_input(name, batch)
            return registry[name]().eval(), (x if isinstance(x, tuple) else (x,))
    return models.load_model(name, batch)


GraphCall = tuple[str, str, Callable, tuple, dict]


def _callee(gm: fx.GraphModule, node: fx.Node) -> tuple[str, Callable] | None:
    """(callee name, callable) of a node that calls something (a module, a function or a
    method); None for the graph's inputs, attributes and output."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return type(module).__name__, module
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target)), node.target
    if node.op == "call_method":
        return node.target, lambda s, *a, _m=node.target, **k: getattr(s, _m)(*a, **k)
    return None


def graph_calls(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[GraphCall]:
    """(node name, callee name, callable, args, kwargs) of every call the traced graph makes,
    with the arguments one forward gave it (what each call is timed alone on)."""
    gm, _ = trace(model, inputs)
    calls = []

    class Capture(fx.Interpreter):
        def run_node(self, n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            result = super().run_node(n)
            if (callee := _callee(gm, n)) is not None:
                calls.append((n.name, *callee, args, kwargs))
            return result

    with torch.no_grad():
        Capture(gm).run(*inputs)
    return calls


def forward_replay(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[[], list[float]]:
    """A function that runs one forward of the traced graph and returns each call's seconds, in
    the order of :func:`graph_calls`. Each call takes the outputs the calls before it made in
    this same forward, as a model's forward does: replaying the arguments captured once hands
    every call an input last written a whole forward before, which the caches have lost. The
    graph's own generated code runs, each call wrapped in a timer, so the gaps between calls
    stay a forward's: an fx Interpreter between them took EfficientNet-B0 b1's calls from 17 ms
    to 27 on a VM whose LLC loses a sixth of what it holds in a millisecond."""
    gm, _ = trace(model, inputs)
    seconds: list[float] = []
    clock = time.perf_counter

    def timed(fn: Callable) -> Callable:
        def call(*args, **kwargs):
            start = clock()
            out = fn(*args, **kwargs)
            seconds.append(clock() - start)
            return out
        return call

    for node in gm.graph.nodes:
        if (callee := _callee(gm, node)) is not None:
            node.op, node.target = "call_function", timed(callee[1])
    gm.recompile()

    def replay() -> list[float]:
        seconds.clear()
        gm(*inputs)
        return list(seconds)

    return replay


def repeated_seconds(fn: Callable, args: tuple, kwargs: dict, repeats: int) -> float:
    """The median seconds of ``repeats`` timed calls of ``fn``, after two untimed ones."""
    clock = time.perf_counter
    fn(*args, **kwargs)
    fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        start = clock()
        fn(*args, **kwargs)
        times.append(clock() - start)
    return statistics.median(times)


def time_calls(calls, replay: Callable[[], list[float]], *, rounds: int, replays: int, repeats: int
               ) -> list[tuple[float, float]]:
    """(in-sequence ms, alone ms) per call: medians over rounds of each round's median. In
    sequence: ``replay()`` (:func:`forward_replay`); alone: the call repeated on its captured
    arguments, after two untimed calls."""
    with torch.no_grad():
        for _ in range(2):
            replay()
        per_round = []
        for _ in range(rounds):
            sequence = [statistics.median(c) for c in zip(*(replay() for _ in range(replays)), strict=True)]
            per_round.append((sequence, [repeated_seconds(fn, a, k, repeats) for _, _, fn, a, k in calls]))
    return [(statistics.median(r[0][i] for r in per_round) * 1e3, statistics.median(r[1][i] for r in per_round) * 1e3)
            for i in range(len(calls))]


def forward_ms(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], runs: int) -> float:
    """The model's own forward, untimed inside: the median of ``runs`` calls after two untimed
    ones. The calls' medians sum to less than it: a forward is a sum of calls, so its median
    follows the sum of their means (on a 2-vCPU EPYC VM MobileNet-V2 b1's forward took 13.4
    ms, its calls' medians summed to 12.2 and their means to 13.5)."""
    with torch.no_grad():
        return repeated_seconds(model, inputs, {}, runs) * 1e3


def predictions(model, inputs, profile: str) -> dict[str, float]:
    from calibration import load_calibration
    from calibration.predict.mapper import mapper_for
    from calibration.predict.plan import partition

    cal = load_calibration(profile)
    estimate = mapper_for(cal).estimate(partition(model, inputs, cal))
    return {k.name: k.seconds * 1e3 for sg in estimate.subgraphs for k in sg.kernels}


def report(name: str, batch: int, calls: list[Call], top: int, forward: float | None = None) -> str:
    seq, alone = sum(c.in_sequence_ms for c in calls), sum(c.alone_ms for c in calls)
    predicted = [c.predicted_ms for c in calls if c.predicted_ms is not None]
    lines = [f"{name} batch {batch}: {len(calls)} calls, {seq:.3f} ms in sequence, {alone:.3f} ms alone "
             f"(x{seq / alone:.2f})" + (f", {sum(predicted):.3f} ms predicted" if predicted else "")
             + (f"; the forward itself {forward:.3f} ms (x{forward / seq:.2f} the calls in sequence)"
                if forward is not None else "")]
    by_op: dict[str, list[Call]] = {}
    for c in calls:
        by_op.setdefault(c.op, []).append(c)
    lines.append(f"  {'callee':<22}{'calls':>6}{'in sequence':>13}{'alone':>10}{'ratio':>7}{'predicted':>11}")
    for op, group in sorted(by_op.items(), key=lambda kv: -sum(c.extra_ms for c in kv[1])):
        s, a = sum(c.in_sequence_ms for c in group), sum(c.alone_ms for c in group)
        p = [c.predicted_ms for c in group if c.predicted_ms is not None]
        lines.append(f"  {op[:22]:<22}{len(group):>6}{s:>13.3f}{a:>10.3f}{s / a if a else 0.0:>7.2f}"
                     f"{f'{sum(p):.3f}' if p else '-':>11}")
    lines.append(f"  calls losing most in sequence ({min(top, len(calls))} of {len(calls)}), ms:")
    for c in sorted(calls, key=lambda c: -c.extra_ms)[:top]:
        pred = f"  predicted {c.predicted_ms:.4f}" if c.predicted_ms is not None else ""
        lines.append(f"    {c.name[:28]:<28} {c.op[:16]:<16} {c.in_sequence_ms:.4f} in sequence, {c.alone_ms:.4f} alone"
                     f" ({c.extra_ms:+.4f}){pred}")
    return "\n".join(lines)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [*models.MODELS, *heldout_models.HELDOUT, *coverage_models.COVERAGE]
    parser.add_argument("model", help=f"one of {', '.join(names)}")
    parser.add_argument("--batch", type=positive, default=1)
    parser.add_argument("--profile", help="a calibration: each call's prediction beside its times")
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--replays", type=positive, default=9, help="replays of the graph per round (default: 9)")
    parser.add_argument("--repeats", type=positive, default=11, help="timed calls of each call alone (default: 11)")
    parser.add_argument("--top", type=positive, default=12)
    parser.add_argument("--json", metavar="FILE", help="write every call's times as JSON")
    args = parser.parse_args(argv)
    if args.model not in names:
        parser.error(f"unknown model {args.model!r}; models: {', '.join(names)}")
    model, inputs = build(args.model, args.batch)
    calls = graph_calls(model, inputs)
    times = time_calls(calls, forward_replay(model, inputs), rounds=args.rounds, replays=args.replays,
                       repeats=args.repeats)
    predicted = predictions(model, inputs, args.profile) if args.profile else {}
    rows = [Call(name, op, seq, alone, predicted.get(name)) for (name, op, *_), (seq, alone) in
            zip(calls, times, strict=True)]
    forward = forward_ms(model, inputs, args.rounds * args.replays)
    print(report(args.model, args.batch, rows, args.top, forward))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "batch": args.batch, "forward_ms": forward,
                       "calls": [asdict(r) for r in rows]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
