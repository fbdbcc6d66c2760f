"""Calibrating for a workload: the distinct kernels and fusion groups of given models as cases.

``pytest bench/ --calibrate-model resnet18 --calibrate-model-batch 1,8`` partitions each
model at each batch and adds every kernel the operation registry models (at the model's own
shapes and dtype), the cold twin of each conv and linear, the module-call probe of each
nn.Module class it calls, and every fusion group the partitioner formed, to the run's cases. The
profile then holds exact entries for that model, so predicting it is composition alone;
each such entry records the models it came from (``origin``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from calibration.predict.cost import TRANSPOSED_CONV_OPS
from calibration.predict.models import load_model
from calibration.predict.plan import partition
from calibration.predict.results import NodeCost
from calibration.specs.operations import COLD_TWINS, MODULE_PROBES, OPERATIONS, Case
from calibration.specs.patterns import PATTERNS, FusionCase


@dataclass
class WorkloadCases:
    operations: dict[str, list[Case]] = field(default_factory=dict)  # operation -> its new cases
    fusion: dict[str, list[FusionCase]] = field(default_factory=dict)  # pattern family -> its new cases
    origin: dict[str, list[str]] = field(default_factory=dict)  # case key -> "model bN" it came from

    def add(self, case: Case | FusionCase, label: str) -> None:
        key = case.key
        if key not in self.origin:
            if isinstance(case, Case):
                self.operations.setdefault(case.operation, []).append(case)
            else:
                self.fusion.setdefault(PATTERNS[case.pattern].family, []).append(case)
        if label not in self.origin.setdefault(key, []):
            self.origin[key].append(label)

    def count(self) -> int:
        return len(self.origin)


def _ordered(names: Sequence[str], params: dict) -> tuple:
    """Parameters in the spec's order, the names the spec lists only (a key is built from them)."""
    return tuple((name, params[name]) for name in names if name in params)


def _kernels(nodes: Iterable[NodeCost]) -> Iterator[NodeCost]:
    """Every kernel, and the kernels those no entry prices run inside (a multi-head
    attention's Linears), which the mapper prices one by one. A composite the registry times
    whole (an LSTM layer) is its own case: its entry prices it."""
    for node in nodes:
        if node.kernel:
            yield node
            if node.operation not in OPERATIONS:
                yield from _kernels(node.inner)


def _add_module_call(found: WorkloadCases, module: str, device: str, label: str) -> None:
    """The module-call probe of an nn.Module class the model calls (both forms): what calling
    that class costs over its kernel, which the mapper adds to every such call. A quick grid
    probes Conv2d and ReLU alone; the others then take a ReLU module's cost, and an MLP of
    0.04 ms, whose Linears cost 2.9 us more as modules, came out 11-16% under."""
    for case in OPERATIONS["module_call"].cases(quick=False, device=device):
        if case.param_dict["module"] == module:
            found.add(case, label)


def _attention_shape(node: NodeCost) -> tuple[tuple[str, int], ...] | None:
    """The Attention pattern's (B, H, L, D) of a scaled dot-product attention over (B, H, L, D)
    queries and as many keys; None for another layout (the pattern is square in L)."""
    if node.shape is None or len(node.shape) != 4 or len(node.inner) != 4:
        return None
    scores = node.inner[0]  # Q @ K^T: L x D by D x L
    b, h, lq, d = node.shape
    if scores.params.get("M") != lq or scores.params.get("N") != lq or scores.params.get("K") != d:
        return None
    return (("B", b), ("H", h), ("L", lq), ("D", d))


def _attention_variants(variants_of, device: str) -> tuple[str, ...]:
    """The unfused and library variants (their ratio is the speedup the mapper applies), where
    this device times both."""
    pattern = PATTERNS["Attention"]
    variants = tuple(variants_of(pattern) if variants_of else pattern.variants(device))
    return ("unfused", "library") if {"unfused", "library"} <= set(variants) else ()


def model_cases(models: Iterable[str], batches: Iterable[int], *, device: str,
                input_shape: tuple[int, ...] | None = None, input_dtype: str = "float32",
                dtypes: Iterable[str] = ("float32",), variants_of=None,
                found: WorkloadCases | None = None) -> WorkloadCases:
    """The cases of every distinct kernel and fusion group of ``models`` at ``batches``, added
    to ``found`` where given (models that take different inputs, one call each).

    ``variants_of(pattern)`` gives the fused variants to time on this device (default: the
    pattern's own list).
    """
    found = WorkloadCases() if found is None else found
    for spec in models:
        for batch in batches:
            # a registered model has its own input; the shape is for MODULE:FACTORY models
            model, example = load_model(spec, batch, input_shape if ":" in spec else None, input_dtype)
            label = f"{spec} b{batch}"
            part = partition(model, example)
            for sg in part.subgraphs:
                for node in _kernels(sg.nodes):
                    if node.kind == "call_module" and node.module in MODULE_PROBES:
                        _add_module_call(found, node.module, device, label)
                    if node.op == "scaled_dot_product_attention":
                        # priced as its unfused kernels over the library's measured speedup
                        for dtype in dtypes:
                            for variant in _attention_variants(variants_of, device):
                                if shape := _attention_shape(node):
                                    found.add(FusionCase("Attention", shape, dtype, device, variant), label)
                    if node.operation not in OPERATIONS or node.op in TRANSPOSED_CONV_OPS:
                        # a transposed conv is priced as its direct conv, which is not its kernel
                        continue
                    op = OPERATIONS[node.operation]
                    params = op.complete(node.params)
                    if any(name not in params for name in op.param_names):
                        continue
                    ordered = _ordered((*op.param_names, *op.optional), params)
                    found.add(Case(node.operation, ordered, node.dtype or "float32", device), label)
                    if node.operation in COLD_TWINS and device == "cpu":  # its time with the weights evicted
                        found.add(Case(COLD_TWINS[node.operation], ordered, node.dtype or "float32", device), label)
                if sg.fused and sg.pattern in PATTERNS:
                    pattern = PATTERNS[sg.pattern]
                    names = list(pattern.shapes(False)[0])
                    shape = dict(sg.shape)
                    if any(name not in shape for name in names if name != "GROUPS"):
                        continue
                    variants = variants_of(pattern) if variants_of else pattern.variants(device)
                    for dtype in dtypes:
                        for variant in variants:
                            order = names if "GROUPS" in names else [*names, "GROUPS"]
                            found.add(FusionCase(sg.pattern, _ordered(order, shape), dtype, device, variant), label)
    return found
