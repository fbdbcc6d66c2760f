"""Latency of a partitioned model on calibrated hardware.

Each kernel gets a roofline time with the calibrated efficiency of its operation at its
size: ``max(FLOPs / (compute efficiency x compute ceiling), bytes / (bandwidth efficiency x
bandwidth of the level its working set fits in))``, the efficiencies interpolated between
the calibrated sizes of the same operation and kernel variant. The microbenchmarks time
one call each, dispatch included, so calibrated kernels carry their dispatch cost already;
only kernels the profile has never seen get the measured per-call dispatch overhead added
on top of a roofline at the measured ceilings. A kernel a model reaches through an
nn.Module also pays what the profile measured a call of that module class to cost over
the kernel's own call. Without a profile the roofline uses the
peaks given, and the estimate says so. There is no fixed efficiency and no correction
factor on top of a wrong base.

``mode="eager"`` predicts what eager PyTorch runs: every kernel separately, whatever the
partition grouped. ``mode="fused"`` divides each fused subgraph by the speedup the profile
measured for its pattern (nearest calibrated size), for a runtime that fuses as planned.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Literal

import torch

from calibration.predict import allocator
from calibration.predict.cost import TRANSPOSED_CONV_OPS, attention_kernels, rnn_kernels
from calibration.predict.plan import partition
from calibration.predict.results import NodeCost, Partition
from calibration.profile import lookup, roofline, shape_model
from calibration.profile.entries import AfterBusyPoint, FrozenModel
from calibration.profile.roofline import Bottleneck
from calibration.profile.schema import HardwareCalibration
from calibration.specs import host
from calibration.specs.dtypes import DTYPE_NAMES, itemsize
from calibration.specs.operations import (
    COLD_CONTEXT,
    COLD_TWINS,
    DRIFT_CLASSES,
    OPERATIONS,
    SMALL_KERNEL_S,
    conv_geometry,
    has_cold_twin,
)

Mode = Literal["eager", "fused"]
FLOATING = ("float", "bfloat", "tf32")  # dtype names of floating-point work
# a cold case's warm call slower than this many times the warm entry was not warm (the
# accuracy protocol's drift limits are x0.67-x1.5), in a profile whose cold twins timed the
# second call after the cold one (no COLD_CONTEXT in the entry's source)
NOT_WARM = 1.5


class KernelEstimate(FrozenModel):
    name: str
    op: str
    operation: str | None
    seconds: float
    bottleneck: Bottleneck
    source: str  # how the time was obtained: calibrated, interpolated, roofline fallback
    copy_seconds: float = 0.0  # an operand copied before the kernel (NodeCost.copy_bytes), included in seconds
    cold_factor: float = 1.0  # cold / warm: its weights evicted between forwards, included in seconds
    # what the call pays for following the call before it (the profile's after_busy points),
    # included in seconds (for a fused group's first kernel: times the group's speedup, which
    # fused mode divides the group by)
    after_busy_seconds: float = 0.0
    # what the call pays for finding in the LLC the operands its benchmark kept in the cores'
    # own caches (Mapper._from_the_llc_seconds), included in seconds
    from_llc_seconds: float = 0.0
    # what the call pays for fetching its op's code again after the forward's traffic since the
    # last call of its kind evicted it (the profile's after_evict probes), included in seconds
    refetch_seconds: float = 0.0
    # what a forward pays for the call's spread: the mean of its time over the median the
    # profile's entries give (Mapper._spread), included in seconds
    spread_seconds: float = 0.0

    @property
    def drift_class(self) -> str:
        """The class of kernel whose drift this one's time follows (specs.operations.DRIFT_CLASSES)."""
        if self.seconds < SMALL_KERNEL_S:
            return "small"
        return "compute" if self.bottleneck == Bottleneck.COMPUTE else "memory"


class SubgraphEstimate(FrozenModel):
    index: int
    name: str
    pattern: str | None
    fused: bool
    kernels: tuple[KernelEstimate, ...]
    flops: int
    bytes: int
    speedup: float  # applied in fused mode; 1.0 in eager mode or when unknown
    total_ms: float
    bottleneck: Bottleneck


class AllocatorTerm(FrozenModel):
    """What one forward's page faults cost under the allocator this process uses."""

    allocator: str  # as detected: glibc (defaults), glibc (MALLOC_...=...), jemalloc, tcmalloc, mimalloc
    fault_bytes: int | None  # the forward's allocations replayed through that allocator; None: not replayed
    # the range over the heaps replayed (this process's and a fresh one's; under glibc down to the
    # blocks it always maps fresh): what a steady forward faults depends on the process's history
    fault_bytes_low: int | None = None
    fault_bytes_high: int | None = None
    ms: float | None  # at the profile's price per faulted page; None: unpriced
    ms_low: float | None = None  # the fewest pages at the lowest price
    ms_high: float | None = None  # the most pages at the highest price


class LatencyEstimate(FrozenModel):
    model: str
    mode: str
    total_ms: float  # steady_ms plus the allocator term (where priced)
    steady_ms: float  # the kernels alone: what a caching allocator gives
    # of steady_ms: Module.__call__ of the modules the graph flattened (Partition.flattened_module_calls)
    module_calls_ms: float = 0.0
    # of steady_ms: what the kernels pay for following the ones before them (KernelEstimate.after_busy_seconds)
    after_busy_ms: float = 0.0
    # of steady_ms: operands a forward finds in the LLC that a benchmark keeps in the cores' caches
    from_llc_ms: float = 0.0
    # of steady_ms: each call's code fetched again (KernelEstimate.refetch_seconds)
    refetch_ms: float = 0.0
    # of steady_ms: the calls' means over their medians (KernelEstimate.spread_seconds)
    spread_ms: float = 0.0
    allocator: AllocatorTerm | None = None
    subgraphs: tuple[SubgraphEstimate, ...]
    notes: tuple[str, ...]  # fallbacks taken, stated once each

    def time_by_class(self) -> dict[str, float]:
        """Milliseconds of this estimate per drift class (specs.operations.DRIFT_CLASSES): kernels
        under SMALL_KERNEL_S are "small", the rest go by the roof that bounds them; the page
        faults count as memory. Fused subgraphs are scaled by their speedup."""
        split = dict.fromkeys(DRIFT_CLASSES, 0.0)
        for sg in self.subgraphs:
            for k in sg.kernels:
                split[k.drift_class] += k.seconds * 1e3 / sg.speedup
        split["memory"] += self.total_ms - self.steady_ms
        split["small"] += self.module_calls_ms
        return split

    def table(self) -> str:
        rows = [f"{'#':>3} {'subgraph':<28} {'kernels':>7} {'GFLOP':>8} {'MB':>8} {'ms':>9} {'%':>5}  bound",]
        for sg in self.subgraphs:
            share = 100 * sg.total_ms / self.total_ms if self.total_ms else 0.0
            rows.append(f"{sg.index:>3} {sg.name[:28]:<28} {len(sg.kernels):>7} {sg.flops / 1e9:8.3f} "
                        f"{sg.bytes / 1e6:8.2f} {sg.total_ms:9.3f} {share:5.1f}  {sg.bottleneck.value}")
        rows.append(f"predicted total ({self.mode}): {self.total_ms:.3f} ms")
        if self.module_calls_ms:
            rows.append(f"  of which {self.module_calls_ms:.3f} ms calling the modules the graph flattened "
                        "(containers, blocks, the model)")
        if self.after_busy_ms:
            rows.append(f"  of which {self.after_busy_ms:.3f} ms for calls right after longer kernels "
                        "(the profile's after_busy points)")
        if self.from_llc_ms:
            rows.append(f"  of which {self.from_llc_ms:.3f} ms for operands the forward leaves in the LLC that a "
                        "benchmark keeps in the cores' own caches (the triad sweep's rates)")
        if self.refetch_ms:
            rows.append(f"  of which {self.refetch_ms:.3f} ms for calls whose op's code the forward's traffic evicted "
                        "since the last call of the kind (the profile's after_evict probes)")
        if self.spread_ms:
            rows.append(f"  of which {self.spread_ms:.3f} ms for the calls' spread: a forward pays their means, the "
                        "profile's entries are medians (the profile's mean over median by call time)")
        if self.allocator is not None and self.allocator.ms:
            rows.append(f"  of which {self.steady_ms:.3f} ms steady state and {self.allocator.ms:.3f} ms page faults "
                        f"({self.allocator.allocator})")
        rows += [f"note: {note}" for note in self.notes]
        return "\n".join(rows)


class Mapper:
    """Roofline latency from a calibration (or, failing that, from peaks)."""

    device = "cpu"

    def __init__(self, calibration: HardwareCalibration | None = None, *,
                 peak_gflops: float | None = None, peak_bandwidth_gbps: float | None = None):
        if calibration is None and not (peak_gflops and peak_bandwidth_gbps):
            raise ValueError("a mapper needs a calibration profile, or both peak_gflops and peak_bandwidth_gbps")
        self.calibration = calibration
        self.peak_gflops = peak_gflops
        self.peak_bandwidth_gbps = peak_bandwidth_gbps
        self.notes: list[str] = []
        self._replayed: dict[tuple[tuple[int, int], ...], allocator.FaultReplay | None] = {}
        self._llc: tuple[int | None, str] | None = None  # (bytes, where from), read once
        # (bytes, the LLC's triad GB/s, the triad sweep), read once: every kernel looks them up
        self._private: tuple[int, float, list[tuple[int, float]]] | None = None
        # (bytes read, share of a working set the private caches lose to them): reread points
        self._losses: list[tuple[int, float]] | None = None
        self._busy: list[tuple[int, float]] | None = None
        # (working-set bytes, share the LLC loses to one pass of it): the triad sweep, read once
        self._llc_curve: list[tuple[int, float]] | None = None
        # (working-set bytes, [(ms touching no memory, share of it the LLC lost in them)]) by
        # the after_wait cases' GEMV sizes, read once
        self._waits: list[tuple[int, list[tuple[float, float]]]] | None = None
        self._evict_probes: dict[str, float] | None = None  # op kind -> us (after_evict), read once
        self._busy_points: list[AfterBusyPoint] | None = None  # read once
        # (ms of the kernel before, us per MB a call's data pays for it): after_busy, read once
        self._busy_data: list[tuple[float, float]] | None = None
        self._spread_points: list[tuple[float, float]] | None = None  # (s, mean / median): call_spread, read once

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # ------------------------------------------------------------------ ceilings
    def _compute_ceiling(self, dtype: str) -> float | None:
        measured = self.calibration.compute_ceiling(dtype) if self.calibration else None
        return measured or self.peak_gflops

    def _bandwidth_ceiling(self, nbytes: int) -> float | None:
        cal = self.calibration
        if cal is None:
            return self.peak_bandwidth_gbps
        return cal.bandwidth_ceiling(nbytes) or self.peak_bandwidth_gbps

    def _dispatch_seconds(self) -> float:
        overhead = self.calibration.measured.dispatch_overhead_us if self.calibration else None
        return (overhead or 0.0) / 1e6

    def _module_call_seconds(self, module: str | None) -> float:
        """What calling an nn.Module of class ``module`` costs beyond the kernel's benchmarked call.

        The class's own probe where the profile has one; otherwise a small ReLU module call
        less a bare op call (Module.__call__ alone).
        """
        measured = self.calibration.measured if self.calibration else None
        if measured is None:
            return 0.0
        if module in measured.module_overhead_us:
            return measured.module_overhead_us[module] / 1e6
        if measured.module_call_overhead_us is None or measured.dispatch_overhead_us is None:
            return 0.0
        return max(0.0, measured.module_call_overhead_us - measured.dispatch_overhead_us) / 1e6

    def _after_busy_seconds(self, preceding_seconds: float) -> float:
        """What a call pays over its benchmarked (repeated) time for following a kernel of
        ``preceding_seconds``: the profile's after_busy points (:func:`_on_curve`); never
        negative (a point can be, by noise)."""
        points = self._after_busy_points()
        return max(_on_curve([(p.preceding_ms, p.extra_us) for p in points], preceding_seconds * 1e3), 0.0) / 1e6

    def _busy_data_seconds(self, preceding_seconds: float, nbytes: int) -> float:
        """What a call moving ``nbytes`` of activations pays for its data after a kernel of
        ``preceding_seconds``, beyond what the view probe prices (:meth:`_after_busy_seconds`):
        the profile's ``busy_data_costs`` per MB (:func:`_on_curve`), for at most what
        the LLC holds (what a call moves beyond that its benchmark read from DRAM as well)."""
        if self._busy_data is None:
            self._busy_data = (self.calibration.busy_data_costs()
                               if self.calibration is not None and self.device == "cpu" else [])
        if not self._busy_data or nbytes <= 0:
            return 0.0
        llc = self._llc_bytes()
        moved = min(nbytes, llc) if llc else nbytes
        return max(_on_curve(self._busy_data, preceding_seconds * 1e3), 0.0) * moved / 1e6 / 1e6

    def _after_busy_points(self) -> list[AfterBusyPoint]:
        """(preceding ms, extra us) of the after_busy probe that touches no data (a view), where
        the profile has its entries; else the profile's points, averaged over every probe.

        The probes that read and write 1.6-2.4 MB paid, after matmuls of 2.4-5.7 ms, +6 to +58
        us over their repeated times, the view +13 to +16: the rest is their data evicted from
        the cores' L2s by the matmul, which _from_the_llc_seconds prices for every kernel by the
        bytes it moves. The view keeps what the time before a call costs it alone."""
        if self._busy_points is None:
            cal = self.calibration
            views = [e for e in cal.operation_profiles.values()
                     if e.operation == "after_busy" and e.params.get("probe") == "view" and e.device == self.device
                     and e.preceding_ms and e.warm_ms is not None] if cal is not None else []
            if views:
                self._busy_points = sorted((AfterBusyPoint(preceding_ms=e.preceding_ms,
                                                           extra_us=(e.latency.median_ms - e.warm_ms) * 1e3)
                                            for e in views), key=lambda p: p.preceding_ms)
            else:
                self._busy_points = list(cal.measured.after_busy) if cal is not None else []
        return self._busy_points

    def _after_busy(self, kernels: list[tuple[KernelEstimate, ...]], nodes: list[list[NodeCost]],
                    speedups: list[float]) -> list[tuple[KernelEstimate, ...]]:
        """Each call plus what it pays for the call before it; the first follows the last, as
        in a loop of forwards. A subgraph with a speedup other than 1 (fused mode) is one call,
        of its kernels' time over the speedup, and its first kernel pays for it (times the
        speedup, which the subgraph's time is divided by); otherwise each kernel is a call.

        What it pays: the view probe's time (:meth:`_after_busy_seconds`), and for its data,
        its activations' bytes (not a conv's or linear's weights, which the cold term prices)
        at the data probes' cost per MB (:meth:`_busy_data_seconds`), less what finding them in
        the LLC already added (``from_llc_seconds``). On the 2-vCPU EPYC VM (32 MiB L3) a batch
        norm over 4.8 MB ran 120 us repeated and 191-234 after 3.7 ms of matmuls; in a
        MobileNet-V2 at batch 8 its batch norms ran x1.5 and its ReLU6s x2.3 their repeated
        times in place, the view probe giving them a few us."""
        # (subgraph, its kernel that pays, the call's seconds, its activations' bytes, what it paid for the LLC)
        calls = [(g, j, sum(kernels[g][i].seconds for i in members) / speedups[g],
                  sum(nodes[g][i].bytes - min(weight_bytes(nodes[g][i]), nodes[g][i].bytes) for i in members),
                  sum(kernels[g][i].from_llc_seconds for i in members))
                 for g, j, members in forward_calls([len(ks) for ks in kernels], speedups)]
        out = [list(ks) for ks in kernels]
        for c, (g, j, _, activations, from_llc) in enumerate(calls):
            preceding = calls[c - 1][2]  # calls[-1] for the first: the forward before ended with it
            data = max(self._busy_data_seconds(preceding, activations) - from_llc, 0.0)
            extra = (self._after_busy_seconds(preceding) + data) * speedups[g]
            if extra:
                k = out[g][j]
                data_text = f" ({data * 1e6:.1f} us of it for its data)" if data > 0 else ""
                out[g][j] = k.model_copy(update={
                    "seconds": k.seconds + extra, "after_busy_seconds": k.after_busy_seconds + extra,
                    "source": f"{k.source}, +{extra / speedups[g] * 1e6:.1f} us after a {preceding * 1e3:.3g} ms "
                              f"call{data_text}"})
        return [tuple(ks) for ks in out]

    def _refetch_us(self) -> dict[str, float]:
        if self._evict_probes is None:
            cal = self.calibration
            self._evict_probes = cal.after_evict_us() if cal is not None and self.device == "cpu" else {}
        return self._evict_probes

    def _refetch(self, kernels: list[tuple[KernelEstimate, ...]], nodes: list[list[NodeCost]],
                 speedups: list[float]) -> list[tuple[KernelEstimate, ...]]:
        """Each call plus what fetching its op's code again costs it: the profile's after_evict
        probe of its kind (its registry operation; a kind no probe covers takes the probes'
        median) times the share of it the calls since the last call of the same kind took
        (cyclic, as in a loop of forwards; a kind called once sees the rest of the forward).
        A call of a kind just run keeps its code; one after megabytes of other calls fetches it
        again: on the 2-vCPU Xeon VM a batch norm over 128 KB ran 12.8 us repeated and 92.8
        after a 16 MB read, 21.0 with a batch norm on a 2x2 map in between, and a BERT layer's
        linears paid 48-75 us each in its forward at batch 1, its GELU 100.

        The share is :meth:`_share_taken` of the bytes the compute-bound and the memory-bound
        calls in between moved. A subgraph with a speedup other than 1 (fused mode) is one
        call, of its first kernel's kind."""
        probes = self._refetch_us()
        private = self._private_caches()[0] or (self.calibration.private_cache_bytes() if self.calibration else None)
        if not probes or not private:
            return kernels
        fallback = statistics.median(probes.values())
        # (subgraph, its kernel that pays, kind, bytes its compute-bound and memory-bound kernels move)
        calls = []
        for g, j, members in forward_calls([len(ns) for ns in nodes], speedups):
            moved = [0, 0]
            for i in members:
                moved[kernels[g][i].bottleneck != Bottleneck.COMPUTE] += nodes[g][i].bytes
            calls.append((g, j, nodes[g][members[0]].operation or nodes[g][members[0]].op, tuple(moved)))
        if not calls:
            return kernels
        if any(kind not in probes for _, _, kind, _ in calls):
            self._note("op kinds the profile's after_evict probes do not cover pay the probes' median for "
                       "fetching their code again")
        count = len(calls)
        totals = tuple(sum(c[3][k] for c in calls) for k in (0, 1))
        last: dict[str, int] = {}  # kind -> index of its last call, over two passes of the forward
        prefix = [(0, 0)]
        for i in range(2 * count):
            prefix.append(tuple(a + b for a, b in zip(prefix[-1], calls[i % count][3], strict=True)))
        between: list[tuple[int, ...]] = [(0, 0)] * count
        for i in range(2 * count):
            kind = calls[i % count][2]
            if i >= count:
                before = last.get(kind)
                # the bytes the calls between the two moved; a kind called once sees the rest of the forward
                between[i - count] = (tuple(a - b for a, b in zip(prefix[i], prefix[before + 1], strict=True))
                                      if before is not None and before != i - count
                                      else tuple(t - own for t, own in zip(totals, calls[i - count][3], strict=True)))
            last[kind] = i
        out = [list(ks) for ks in kernels]
        for (g, j, kind, _), (compute, memory) in zip(calls, between, strict=True):
            extra = probes.get(kind, fallback) / 1e6 * self._share_taken(compute, memory) * speedups[g]
            if extra > 0:
                k = out[g][j]
                out[g][j] = k.model_copy(update={
                    "seconds": k.seconds + extra, "refetch_seconds": k.refetch_seconds + extra,
                    "source": f"{k.source}, +{extra / speedups[g] * 1e6:.1f} us for its code after "
                              f"{(compute + memory) / 1e6:.3g} MB of other calls"})
        return [tuple(ks) for ks in out]

    def _spread(self, kernels: list[tuple[KernelEstimate, ...]]) -> list[tuple[KernelEstimate, ...]]:
        """Each call at its mean, not its median: its time (in-context costs included) times
        the profile's mean over median at that time (``call_spread``, linear in log time
        between its points, held beyond them). The entries are medians of their rounds; a
        forward sums its calls, and a sum follows their means (a call the host holds up now and
        then costs every forward its share). Unchanged without the points."""
        if self._spread_points is None:
            cal = self.calibration
            self._spread_points = cal.call_spread() if cal is not None else []
        points = self._spread_points
        if not points:
            return kernels
        out = []
        for ks in kernels:
            priced = []
            for k in ks:
                extra = k.seconds * (roofline.interpolate_log(k.seconds, points) - 1.0) if k.seconds > 0 else 0.0
                priced.append(k.model_copy(update={"seconds": k.seconds + extra, "spread_seconds": extra})
                              if extra else k)
            out.append(tuple(priced))
        return out

    def _share_taken(self, compute_bytes: int, memory_bytes: int) -> float:
        """The share of a call's cached code and data that the calls since its last one took:
        those that stream memory by the bytes they moved through the ``reread`` points
        (:meth:`_private_share_lost`), the compute-bound ones by the bytes through the
        ``after_busy`` probes' (a square matmul's three operands; ``busy_losses``), each
        keeping what the other left. Without after_busy probes, all through the reread points.

        The two differ: a tiny call lost nothing of its code to 2 MB of reads, 10-15% to 4 MB
        and 40-100% to 8 MB, where a 1 ms conv moving 1.7 MB took all of it, and a matmul over
        1.8 MB 40-60%. An MLP at batch 1, all GEMVs streaming 1.6 MB of weights between two
        calls of a kind, ran its calls at their repeated times; taken all through the after_busy
        points it came out 20-40% over."""
        if self._busy is None:
            self._busy = self.calibration.busy_losses() if self.calibration is not None and self.device == "cpu" else []
        if not self._busy:
            return self._private_share_lost(compute_bytes + memory_bytes) if compute_bytes + memory_bytes else 0.0
        kept = 1.0 - (self._private_share_lost(memory_bytes) if memory_bytes > 0 else 0.0)
        if compute_bytes > 0:
            kept *= 1.0 - _share_on(self._busy, compute_bytes)
        return 1.0 - kept

    # ------------------------------------------------------------------ kernels
    def kernel(self, node: NodeCost, *, reuse_bytes: int | None = None, since_seconds: float | None = None,
               warm: KernelEstimate | None = None) -> KernelEstimate:
        """One kernel's time; ``reuse_bytes`` (what the rest of the forward touches between two
        of its calls) and ``since_seconds`` (how long the rest of it takes) make a conv or
        linear pay for the share of its weights and output they evict. ``warm``: the kernel's
        estimate alone, where the caller has it."""
        estimate = self._kernel(node) if warm is None else warm
        factor = self._cold_factor(node, reuse_bytes, estimate.seconds, since_seconds,
                                   streams=estimate.bottleneck == Bottleneck.MEMORY)
        if factor > 1.0:
            estimate = estimate.model_copy(update={
                "seconds": estimate.seconds * factor, "cold_factor": factor,
                "source": f"{estimate.source}, x{factor:.2f} for the weights the forward evicts"})
        # the microbenchmarks call kernels; a model calls modules, which costs a class-dependent
        # amount more per call (a probe can measure less: never below a bare op call)
        extra = self._module_call_seconds(node.module) if node.kind == "call_module" else 0.0
        if extra:
            estimate = estimate.model_copy(update={"seconds": max(estimate.seconds + extra, self._dispatch_seconds())})
        if node.copy_bytes:
            copy = self._copy_seconds(node)
            estimate = estimate.model_copy(update={"seconds": estimate.seconds + copy, "copy_seconds": copy})
        return estimate

    def _llc_bytes(self) -> int | None:
        """The LLC's capacity as the profile's triad sweep saw it (a VM's share of a socket's
        LLC), where that is less than the OS reports."""
        if self.calibration is None:
            return None
        if self._llc is None:
            self._llc = self.calibration.last_level_cache() or (None, "")
        return self._llc[0]

    def _private_caches(self) -> tuple[int, float, list[tuple[int, float]]]:
        """(bytes the cores' own caches hold over every thread, the LLC's triad GB/s, the triad
        sweep); (0, 0.0, []) where the profile lacks the cache sizes or a sweep point past
        those caches, and on a GPU (the cache sizes a profile records are its host CPU's)."""
        if self._private is None:
            self._private = (0, 0.0, [])
            cal = self.calibration
            private = cal.private_cache_bytes() if cal is not None and self.device == "cpu" else None
            if private:
                sweep = cal.triad_sweep()
                llc = roofline.llc_gbps(dict(sweep), private)
                if llc is not None:
                    self._private = (private, llc, sweep)
        return self._private

    def _from_the_llc_seconds(self, nbytes: int, footprint: int | None) -> float:
        """What a kernel moving ``nbytes`` pays in a forward touching ``footprint`` bytes for
        finding in the LLC what its benchmark kept in the cores' own caches.

        A benchmark repeats one call, so a working set that fits the cores' L2s (every
        thread's) stays there; in a forward the rest of the forward passes through them
        between two calls. On the 2-vCPU Xeon VM a call timed right after rewriting 8 MiB (its
        two 2 MiB L2s twice over, the LLC untouched) ran x2.2-2.7 its repeated time for batch
        norms, ReLUs and a GEMV of 0.4-1.6 MB and x1.04-1.07 for 1.8-3 MB convs and GEMMs,
        where the same time spent busy on 64 KiB left them at x0.9-1.2 (a cache effect, not a
        clock or wake-up one), and calls timed in place in forwards had run x2.1-2.4 (memory
        bound) and x1.03-1.25 (compute) their repeated times. The price is each byte at the
        LLC's triad rate less at the rate the sweep ran a working set of this size (what the
        benchmark read it at): 11 us per MB here, against 12-27 measured. The share of the
        working set the forward evicts is what the profile's ``reread`` cases lost to as many
        bytes of other reads (:meth:`_private_share_lost`): an MLP whose 2 MB of weights fit
        the L2s keeps them. A working set larger than the private caches was read from the
        LLC by its benchmark already, and pays nothing here.
        """
        private, llc_gbps, sweep = self._private_caches()
        if not private or not footprint or nbytes <= 0 or nbytes > private:
            return 0.0
        bench_gbps = roofline.sweep_gbps(sweep, nbytes)
        if not bench_gbps or bench_gbps <= llc_gbps:  # a call-bound size: its rate is no cache's
            return 0.0
        return nbytes * self._private_share_lost(footprint) * (1.0 / llc_gbps - 1.0 / bench_gbps) / 1e9

    def _private_share_lost(self, footprint: int) -> float:
        """The share of a working set the cores' own caches lose while a forward touches
        ``footprint`` other bytes: read off the profile's ``reread`` points (in log bytes;
        from 0 at none to the first point; all of it past the last), else what random
        replacement loses, ``1 - exp(-footprint / private)`` (a profile without them).

        Random replacement is what the cores' caches did not do on the Xeon VM: a 1 MiB GEMV
        re-read after other reads of half, one and two times its 4 MiB of L2s had lost 5-20%,
        30-35% and 60-70% of what it lost after four times (random: 39, 63 and 86%), and an
        MLP whose forward touches 2 MiB ran its GEMVs at their repeated times where the
        random share put it 15-20% over."""
        if self._losses is None:
            self._losses = self.calibration.private_cache_losses() if self.calibration is not None else []
        if not self._losses:
            private = self._private_caches()[0]
            return 1.0 - math.exp(-footprint / private) if private else 0.0
        return _share_on(self._losses, footprint)

    def _with_llc_operands(self, node: NodeCost, estimate: KernelEstimate, footprint: int | None) -> KernelEstimate:
        """``estimate`` plus _from_the_llc_seconds for each kernel the node runs (a composite's inner ones)."""
        moved = [inner.bytes for inner in node.inner if inner.kernel] if node.inner else [node.bytes]
        extra = sum(self._from_the_llc_seconds(nbytes, footprint) for nbytes in moved)
        if extra <= 0:
            return estimate
        return estimate.model_copy(update={
            "seconds": estimate.seconds + extra, "from_llc_seconds": extra,
            "source": f"{estimate.source}, +{extra * 1e6:.1f} us for operands found in the LLC"})

    def _cold_factor(self, node: NodeCost, reuse_bytes: int | None, warm_seconds: float | None = None,
                     since_seconds: float | None = None, *, streams: bool = False) -> float:
        """How much slower this conv or linear runs with the rest of the forward (``reuse_bytes``
        touched between two of its calls, in ``since_seconds``) going through the last-level
        cache: 1 + what fetching the share evicted of its weights and output adds, over its
        warm time (``warm_seconds``, else its estimate alone); 1 for other kernels or a kernel
        alone. Its weights lose to the time between two of its calls as well
        (:meth:`_weights_share`).

        What an evicted byte adds is the profile's cold twins' (cold less warm, over the bytes
        they evict: weights and output): interpolated in log bytes among the twins at each
        scale the variant's efficiency follows (a GEMM's rows, a conv's narrower channel count),
        then in log scale between those; held flat beyond the twins; never below 0 (a cold call
        measured faster than its warm twin is noise). A time added per byte, not the twins'
        cold / warm ratio, because a kernel's warm time is not its twins' at other sizes: a warm
        16 MiB GEMV ran at 17 GB/s, half the 4 MiB one's 32, and that twin's x2.6 made a
        forward's 16 MiB GEMVs 1.7x what they took; past the LLC a weight streams from DRAM warm
        or cold (the 64 MiB twin adds nothing), so a GEMV between the two adds part of the
        smaller one's cost per byte. Per byte of weights alone, the depthwise convs' twins (9
        weights a channel, their cold cost the output's) put EfficientNet-B0's 1x1 convs at 3.9x.
        The evicted share is 1 - exp(-reuse / LLC), a line's chance of being replaced after that
        much other traffic under random replacement: an LLC shared with other tenants keeps no
        strict LRU order, and a forward just under the LLC's size already loses part of its
        weights. The LLC is the size the profile's triad sweep saw where that is less than the
        OS reports (``last_level_cache``): a 2-vCPU Xeon VM reported its socket's 480 MiB and
        its sweep read 140 MiB; taking 480 had put its held-out models 13-27% under.
        """
        cold_name = COLD_TWINS.get(node.operation or "")
        llc, dtype = self._llc_bytes(), node.dtype or "float32"
        evicted = evicted_bytes(node.operation, node.params, dtype)
        if cold_name is None or not reuse_bytes or reuse_bytes <= 0 or llc is None or evicted <= 0:
            return 1.0
        if not has_cold_twin(OPERATIONS[node.operation], node.params):
            return 1.0  # its few KB cost nothing per byte worth pricing (specs.operations.NOT_COLD)
        cal, spec = self.calibration, OPERATIONS[cold_name]

        def scale(params) -> float:
            return max(float(spec.scale(spec.complete(params))), 1.0) if spec.scale else 1.0

        groups: dict[float, list[tuple[float, float]]] = {}  # scale -> (evicted bytes, added ms per byte)
        # scale -> (evicted bytes, cold ms per byte) of the twins whose warm entry is memory-bound
        streamed_groups: dict[float, list[tuple[float, float]]] = {}
        refetch_ms = self._refetch_us().get(node.operation or "", 0.0) / 1e3
        for cold in lookup.candidates(cal, cold_name, dtype, self.device, node.params):
            # cold / warm from the warm call timed in the cold case's own rounds (the warm entry
            # was timed minutes apart: 10-25% of drift in the ratio on a shared machine), unless
            # that call was not warm: it follows a cold call, and a GEMV streaming 4 MiB of
            # weights ran 2.5x its benchmarked time there, past any drift; then the entry's.
            # That ratio less 1, times the warm entry, is what the cold fetch added.
            # A twin timed third after the cold call (COLD_CONTEXT) is warm: where it ran slow, the
            # host did, for the cold call as well (a 256x256 3x3 conv at batch 8: 15.3 ms cold, 15.1
            # its twin, 9.4 the entry timed minutes before; the entry as the base had priced its
            # weights at 5.9 ms a call, 17.7 of a 180 ms ResNet-18 forward)
            warm = cal.get_operation(node.operation, dtype=dtype, device=self.device, **cold.params)
            warm_ms = cold.warm_ms
            second_call = COLD_CONTEXT not in (cold.latency.source or "")
            # ... except a memory-bound kernel's: its time is where its data sits, and a third call
            # that far over the entry streamed it from DRAM again (a 12 MiB GEMV: 0.82 ms cold, 0.70
            # its third call, 0.25 the entry; taken as warm, x1.17 where a forward's 16 MiB GEMVs ran x1.9)
            streamed = warm is not None and warm.bottleneck == Bottleneck.MEMORY
            if warm is not None and (warm_ms is None or ((second_call or streamed)
                                                         and warm_ms > NOT_WARM * warm.latency.median_ms)):
                warm_ms = warm.latency.median_ms
            twin_evicted = evicted_bytes(node.operation, cold.params, dtype)
            if warm_ms and twin_evicted > 0:
                entry_ms = warm.latency.median_ms if warm is not None else warm_ms
                # less what its code cost it to fetch again after the flush, which _refetch prices
                added = (cold.latency.median_ms / warm_ms - 1.0) * entry_ms - refetch_ms
                groups.setdefault(scale(cold.params), []).append((twin_evicted, added / twin_evicted))
                if streamed:  # its cold time as at the entry's moment: the entry and what cold added
                    streamed_groups.setdefault(scale(cold.params), []).append(
                        (twin_evicted, (entry_ms + added) / twin_evicted))
        if not groups:
            self._note(f"the profile has no cold {node.operation} cases: kernels whose weights a forward evicts "
                       "from the LLC are timed warm (calibrate the 'cold' family)")
            return 1.0
        # two steps, as efficiencies are looked up (profile.lookup): over log evicted bytes among
        # the twins at each scale (a GEMM's rows), then over log scale between those
        by_scale = [(at, roofline.interpolate_log(evicted, points)) for at, points in groups.items()]
        per_byte_ms = max(0.0, roofline.interpolate_log(scale(node.params), by_scale))
        warm_seconds = self._kernel(node).seconds if warm_seconds is None else warm_seconds
        if warm_seconds <= 0:
            return 1.0
        share = self._evicted_share(node, reuse_bytes, llc)
        weights = min(weight_bytes(node), evicted)
        if weights and since_seconds:
            held = self._weights_share(share, since_seconds, reuse_bytes + evicted)
            share = (weights * held + (evicted - weights) * share) / evicted
        all_evicted = per_byte_ms * evicted / 1e3
        if streams and node.operation == "linear" and streamed_groups:
            # a memory-bound GEMM (a GEMV, a few rows) with all of its weights evicted streams them
            # at the rate its twins streamed theirs: where its warm time is below theirs (a shape
            # the grid lacks, priced by a fit that does not see the LLC's edge: a 16 MiB GEMV
            # between the 12 and 24 MiB ones at 0.55 ms, alone 0.75-1.03, in a forward 1.2),
            # their cold calls' rate is its floor
            by_rate = [(at, roofline.interpolate_log(evicted, points)) for at, points in streamed_groups.items()]
            cold_seconds = roofline.interpolate_log(scale(node.params), by_rate) * evicted / 1e3
            all_evicted = max(all_evicted, cold_seconds - warm_seconds)
        return 1.0 + all_evicted * share / warm_seconds

    def _weights_share(self, evicted_share: float, since_seconds: float, working_set: int | None = None) -> float:
        """The share of a conv's or linear's weights gone from the LLC when it is called again
        ``since_seconds`` later: what the forward's traffic evicts (``evicted_share``), and of
        what that leaves, what the LLC loses to the time with ``working_set`` bytes of the
        process in it (the profile's ``after_wait`` cases, :meth:`_wait_share`).

        A VM's LLC is its host's, and the other tenants' traffic goes through it: on the
        2-vCPU Xeon VM a GEMV over 16 MiB lost 20% of what a flush took after 5 ms in which the
        process touched no memory, 48% after 20 and 91% after 50, and a 12.6 MB add ran x2
        after 20 ms of matmul, spin or sleep alike. Its output is another matter: the caching
        allocator hands it a block the forward freed a few calls before."""
        return 1.0 - (1.0 - evicted_share) * (1.0 - self._wait_share(since_seconds, working_set))

    def _wait_share(self, seconds: float, working_set: int | None = None) -> float:
        """The share of a working set of ``working_set`` bytes the LLC held that it loses in
        ``seconds``: at each of the profile's ``after_wait`` sizes, its points linear in log
        time between them, held beyond the longest and scaled to zero below the shortest; then
        linear in log bytes between the sizes, held beyond them, a larger set losing no less
        than a smaller one (the other tenants' traffic reaches the process's lines the sooner
        the more of them there are). Without ``working_set``, the largest size's share; 0
        without after_wait cases."""
        if self._waits is None:
            self._waits = (self.calibration.wait_loss_curves()
                           if self.calibration is not None and self.device == "cpu" else [])
        if not self._waits or seconds <= 0:
            return 0.0
        ladder, most = [], 0.0
        for size, curve in self._waits:
            most = max(most, _share_on(curve, seconds * 1e3))
            ladder.append((size, most))
        if working_set is None or working_set <= 0:
            return ladder[-1][1]
        return min(max(roofline.interpolate_log(working_set, ladder), 0.0), 1.0)

    def _evicted_share(self, node: NodeCost, reuse_bytes: int, llc: int) -> float:
        """The share of a conv's or linear's weights and output the rest of a forward
        (``reuse_bytes``) evicts from the LLC (``llc`` bytes) between two of its calls.

        A linear of one row (a matrix-vector product) reads each weight once a call and writes
        nothing weight-sized: what it finds cold is what of its weights the LLC lost to one pass
        of the forward, which is what the triad sweep's hit share says of a working set that
        size streamed again and again (``llc_losses``, in log bytes, at the reuse distance plus
        its weights; nothing below the sweep's best point). Random replacement had put them far
        over on the 2-vCPU Xeon VM: in a forward touching 96 MiB, a wide MLP's 16 MiB GEMVs ran
        +6 to +20% and its 64 MiB one +5% over their repeated times, where random replacement
        over the sweep's 128 MiB gave x1.58 and x1.18 (the model +23-26%); a 64 MiB GEMV re-read
        after 32, 64, 128 and 512 MiB of other reads ran +3, +12, +41% and x2, a 16 MiB one
        after 64, 128 and 256 MiB +2, +19 and +72%, and the sweep lost 8% at 96 MiB, 58% at
        192 and 94% at 384. Everything else keeps random replacement, ``1 - exp(-reuse / LLC)``:
        a call of 8 rows over the same 64 MiB ran at a third of the GEMV's rate (3.6 ms against
        1.2: not one pass over its weights) and lost 11-26% in the same forward, and oneDNN
        writes an eager conv's weights into a blocked copy every call (0.63 of a 512x512 3x3
        conv's 1.16 ms at 7x7), traffic a triad pass does not have; with the sweep's share the
        CNNs had come out 15-25% under."""
        if node.operation == "linear" and int(OPERATIONS["linear"].complete(node.params)["B"]) == 1:
            if self._llc_curve is None:
                self._llc_curve = self.calibration.llc_losses() if self.device == "cpu" else []
            if self._llc_curve:
                working_set = reuse_bytes + weight_bytes(node)
                if working_set <= self._llc_curve[0][0]:
                    return 0.0
                return min(max(roofline.interpolate_log(working_set, self._llc_curve), 0.0), 1.0)
        return 1.0 - math.exp(-reuse_bytes / llc)

    def _copy_seconds(self, node: NodeCost) -> float:
        """An operand the call copied before its GEMM, or read in another layout than its kernel
        runs in (trace.layout_copy_bytes), as the STREAM copy of its size."""
        dtype = node.dtype or "float32"
        elements = max(node.copy_bytes // itemsize(dtype), 1)
        copy = NodeCost(name=f"{node.name}/copy", kind="call_function", target="copy", op="copy", shape=(elements,),
                        dtype=dtype, kernel=True, flops=0, bytes=2 * elements * itemsize(dtype),
                        operation="stream_copy", params={"n": elements})
        return self._kernel(copy).seconds

    def _kernel(self, node: NodeCost) -> KernelEstimate:
        dtype = node.dtype or "float32"
        if node.inner:  # a composite: from the kernels it runs (or, where timed whole, its entry)
            return self._inside(node)
        calibrated = self._narrow_conv(node, dtype) or self._calibrated(node, dtype)
        if calibrated is not None and node.op in TRANSPOSED_CONV_OPS:  # predict.cost prices its direct conv
            calibrated = calibrated.model_copy(update={
                "source": f"as the direct conv whose input gradient it computes, {calibrated.source}"})
        if calibrated is not None:
            return calibrated
        compute, bandwidth = self._compute_ceiling(dtype), self._bandwidth_ceiling(node.bytes)
        t_compute, t_memory = roofline.roof_seconds(node.flops, node.bytes, compute, bandwidth)
        if self.calibration is None:
            self._note("no calibration: roofline at the given peaks, no efficiency, no dispatch overhead")
            source = "peaks"
        else:
            self._note(f"operations the profile has not calibrated ({node.op} ...) use the roofline at the "
                       "profile's ceilings (measured, else the peaks given) plus the measured dispatch overhead")
            source = "roofline at the profile's ceilings"
        seconds = max(t_compute, t_memory) + (self._dispatch_seconds() if self.calibration else 0.0)
        bound = Bottleneck.COMPUTE if t_compute >= t_memory and node.flops else Bottleneck.MEMORY
        return KernelEstimate(name=node.name, op=node.op, operation=node.operation, seconds=seconds,
                              bottleneck=bound, source=source)

    def _inside(self, node: NodeCost) -> KernelEstimate:
        """An op no entry prices, from the kernels it runs inside, each priced as any kernel is.
        Scaled dot-product attention runs them as one fused kernel, priced against the library
        kernel's measured time at the nearest calibrated Attention shape (:meth:`_attention`).

        Any other composite (``nn.TransformerEncoder``, ``nn.MultiheadAttention``, a traced
        function) runs them as calls one after another, and each pays what a forward's calls
        pay for the one before it and for its code (:meth:`_after_busy`, :meth:`_refetch`, over
        its own calls as a loop); a fused LSTM layer is one oneDNN call. A ViT-Tiny's encoder
        had been priced at 3.59 ms from its 44 kernels and ran 6.6 in its forward: its GELUs
        37 us alone and 78 right after their GEMMs."""
        parts = [self._kernel(k) for k in node.inner]
        fused = node.op == "scaled_dot_product_attention" or node.operation == "lstm"
        if not fused and len(parts) > 1:
            parts = list(self._refetch(self._after_busy([tuple(parts)], [list(node.inner)], [1.0]), [list(node.inner)],
                                        [1.0])[0])
        seconds = sum(p.seconds for p in parts)
        compute_s = sum(p.seconds for p in parts if p.bottleneck == Bottleneck.COMPUTE)
        source = f"the {len(parts)} kernels it runs inside, each priced"
        if node.op == "scaled_dot_product_attention" and self.calibration is not None and node.shape:
            seconds, source = self._attention(node, seconds, source)
        if node.operation == "lstm" and self.calibration is not None:
            seconds, source = self._lstm(node, seconds, source)
        in_sequence = {"after_busy_seconds": sum(p.after_busy_seconds for p in parts),
                       "refetch_seconds": sum(p.refetch_seconds for p in parts)} if not fused else {}
        if sum(in_sequence.values()) > 0:
            source += (f", +{in_sequence['after_busy_seconds'] * 1e6:.1f} us for the calls before its own and "
                       f"+{in_sequence['refetch_seconds'] * 1e6:.1f} us for their code")
        return KernelEstimate(name=node.name, op=node.op, operation=node.operation, seconds=seconds,
                              bottleneck=Bottleneck.COMPUTE if compute_s >= seconds / 2 else Bottleneck.MEMORY,
                              source=source, **in_sequence)

    def _attention(self, node: NodeCost, parts_seconds: float, parts_source: str) -> tuple[float, str]:
        """Scaled dot-product attention: its unfused kernels as priced (``parts_seconds``), times
        what the library's fused kernel measured at the nearest calibrated Attention shape over
        the same kernels priced at that shape; at a calibrated shape, its measured time. The
        parts' own pricing is thereby calibrated against the fused kernel, as a speedup alone
        is not: the unfused kernels priced at the calibrated 1x12x128x64 shape came to 215 us
        where the benchmark's unfused twin ran 317, so dividing the parts by the measured x1.17
        put a ViT-Tiny's 1x3x197x64 attention at 110 us (it ran 205) and the calibrated
        4x8x512x64 one at 5.7 ms (it ran 9.0). Without an entry, the parts' sum."""
        out = node.shape
        shape = {"B": math.prod(out[:-3]), "H": out[-3] if len(out) > 2 else 1, "L": out[-2], "D": out[-1]}
        dtype = node.dtype or "float32"
        if dtype not in DTYPE_NAMES:
            return parts_seconds, parts_source
        entry = lookup.nearest_fusion(self.calibration, "Attention", "library", dtype, self.device, shape)
        if entry is None:
            return parts_seconds, parts_source
        p = entry.params
        q = (int(p["B"]), int(p["H"]), int(p["L"]), int(p["D"]))
        at_entry = sum(self._kernel(k).seconds for k in attention_kernels("attention", q, q, q, getattr(torch, dtype)))
        if at_entry <= 0:
            return parts_seconds, parts_source
        ratio = entry.fused.median_ms / 1e3 / at_entry
        at = "x".join(str(n) for n in q)
        return parts_seconds * ratio, (f"{parts_source}, x{ratio:.2f}: the library's fused kernel over the same "
                                       f"kernels priced at the calibrated {at}")

    def _lstm(self, node: NodeCost, parts_seconds: float, parts_source: str) -> tuple[float, str]:
        """A fused LSTM layer: the profile's time at its shape; else its parts' time (``parts_seconds``)
        scaled by what the calibrated layers ran in over their own parts, each priced the same
        way: the geometric mean of their ratios, each weighted by 1 / its squared distance in
        log2 T, B, I, H. oneDNN packs the weights once and runs each step's GEMM and gates
        without the dispatch and the few-row BLAS path eager Linears take: the two layers of an
        LSTM of 256 over 64 steps at batch 8 ran 12.4 ms, their parts timed alone 15.0.

        The ratios of the five grid layers ranged x0.56-1.08 on the AVX2 VM; one layer's ratio
        alone made two layers of one model differ by half."""
        cal, dtype = self.calibration, node.dtype or "float32"
        exact = lookup.find_exact(cal, "lstm", dtype, self.device, node.params)
        if exact is not None:
            return exact.latency.median_ms / 1e3, "calibrated at this shape"
        pool = lookup.candidates(cal, "lstm", dtype, self.device, node.params)
        weighted: list[tuple[float, float]] = []  # (weight, log ratio)
        for entry in pool:
            p = entry.params
            inner = rnn_kernels(entry.key, (p["T"], p["B"], p["I"]), (4 * p["H"], p["I"]), (4 * p["H"], p["H"]),
                                getattr(torch, dtype, torch.float32))  # tf32 computes on float32
            own_parts = sum(self._kernel(k).seconds for k in inner)
            if own_parts > 0 and entry.latency.median_ms > 0:
                distance = sum(math.log2(int(p[k]) / int(node.params[k])) ** 2 for k in ("T", "B", "I", "H"))
                weighted.append((1.0 / distance, math.log(entry.latency.median_ms / 1e3 / own_parts)))
        if not weighted:
            self._note("the profile has no lstm cases: fused LSTM layers are priced as their parts' sum, each "
                       "step's Linear as eager runs it (calibrate the 'rnn' family)")
            return parts_seconds, parts_source
        ratio = math.exp(sum(w * r for w, r in weighted) / sum(w for w, _ in weighted))
        return parts_seconds * ratio, (f"its {len(node.inner)} kernels, each priced, x{ratio:.2f}: what the "
                                       f"{len(weighted)} calibrated layers ran in over their own parts, "
                                       "weighted by nearness")

    def _calibrated(self, node: NodeCost, dtype: str) -> KernelEstimate | None:
        """The profile's time at this shape; else the variant's cost model fitted to its calibrated
        shapes (operations that have one); else the efficiency of the roof that bounds this
        kernel, interpolated at its size.

        Only that roof's efficiency is used: at a size between calibrated ones, the other
        roof's interpolated efficiency describes a different bottleneck and would only add
        pessimism (taking the max of both overpredicted an MLP at batch 8 by 3x).
        """
        cal = self.calibration
        if cal is None or node.operation is None or dtype not in DTYPE_NAMES:
            return None
        spec = OPERATIONS[node.operation]
        flops = spec.flops(node.params)
        nbytes = spec.bytes_moved(node.params, itemsize(dtype))
        compute, bandwidth = self._compute_ceiling(dtype), self._bandwidth_ceiling(nbytes)
        bound = roofline.classify(flops, nbytes, compute, bandwidth)
        candidates = lookup.candidates(cal, node.operation, dtype, self.device, node.params)
        exact = cal.get_operation(node.operation, dtype=dtype, device=self.device, **node.params)
        if exact is not None and exact.busy:
            # a workload run's 768-wide linears timed while another process ran took 16 ms, 0.57 quiet
            self._note("some kernels are priced from entries timed while other processes kept the CPUs busy (the "
                       "profile marks them 'busy'; such an entry can be many times its quiet time): calibrate them "
                       "again on a quiet machine")
        if exact is None and (few := self._few_rows(node, dtype, candidates)) is not None:
            return few
        # A shape the grid has not timed, of an operation with a cost model: from the variant's
        # calibrated shapes by what they spend time on (profile.shape_model), not by FLOPs alone
        if exact is None and (fitted := shape_model.estimate(spec, candidates, spec.complete(node.params),
                                                             itemsize(dtype), floor_seconds=self._dispatch_seconds(),
                                                             compute_gflops=compute,
                                                             bandwidth_gbps=self._bandwidth_ceiling)):
            return KernelEstimate(
                name=node.name, op=node.op, operation=node.operation, seconds=fitted.seconds, bottleneck=bound,
                source=f"fitted to {fitted.entries} calibrated shapes of its variant, x"
                       f"{fitted.seconds / fitted.fitted_seconds:.2f} for its nearest")
        # Where no calibrated size of this kernel variant was bound by that roof, the roof they
        # were bound by is the one it hits: an 8-row GEMM streaming 64 MiB of weights sits at
        # the ridge by FLOPs per byte, but MKL runs it at its 8-row GEMM rate, compute-bound.
        seen = {entry.bottleneck for entry in candidates}
        if seen and bound not in seen:
            bound = next(iter(seen))
        metric, work, ceiling = (("compute", flops, compute) if bound == Bottleneck.COMPUTE
                                 else ("bandwidth", nbytes, bandwidth))
        if not work or not ceiling:
            return None
        try:
            efficiency = cal.get_efficiency(node.operation, metric=metric, dtype=dtype, device=self.device,
                                            **node.params)
        except (KeyError, TypeError, ValueError):  # not calibrated, or a shape the registry does not take
            return None
        if efficiency <= 0:
            return None
        seconds, source = work / (efficiency * ceiling * 1e9), "calibrated at this size"
        if not exact:
            seconds, source = self._below_smallest(candidates, metric, flops or nbytes, flops > 0, seconds)
        return KernelEstimate(
            name=node.name, op=node.op, operation=node.operation, seconds=seconds,
            bottleneck=Bottleneck.COMPUTE if metric == "compute" else Bottleneck.MEMORY, source=source,
        )

    def _narrow_conv(self, node: NodeCost, dtype: str) -> KernelEstimate | None:
        """A conv (groups 1) with fewer output channels than the library computes at once on
        this vector ISA (specs.host.channel_block), which it pads to that block: the time of
        the same conv with a whole block of output channels. None where the profile has this
        shape (its own time), the ISA is not known, or the conv is not that narrow.

        Priced by its own FLOPs, an RGB or mask head is a fraction of the block it runs as: a
        3x3 conv of 8 to 3 channels was priced at 123 us and took 440."""
        cal = self.calibration
        if node.operation != "conv2d" or cal is None or self.device != "cpu":
            return None
        spec = OPERATIONS["conv2d"]
        params = spec.complete(node.params)
        block = host.channel_block(cal.metadata.cpu_capability)
        cout = params.get("COUT")
        if (not block or params.get("GROUPS", 1) != 1 or not isinstance(cout, int) or cout >= block
                or cal.get_operation("conv2d", dtype=dtype, device=self.device, **node.params) is not None):
            return None
        padded = self._calibrated(self._with_params(node, spec, {"COUT": block}, dtype), dtype)
        if padded is None:
            return None
        return padded.model_copy(update={
            "name": node.name, "source": f"{cout} output channels, padded to the {block} the library computes "
                                         f"at once on {cal.metadata.cpu_capability}: {padded.source}"})

    def _few_rows(self, node: NodeCost, dtype: str, candidates) -> KernelEstimate | None:
        """A GEMM with fewer rows than any calibrated one of its variant (but more than one):
        the lesser of a GEMV per row and the time of the fewest rows calibrated, each at this
        kernel's other dimensions. None where the operation counts no rows, or the profile has
        no one-row or no many-row time for it.

        Interpolating the fewest rows' rate down to these rows scales their time by the rows,
        as if a 2-row GEMM cost a quarter of an 8-row one. A BLAS may instead run a few rows as
        that many GEMVs, each streaming the weights (MKL on the AVX2 VM: 2 rows of 4096x4096
        ran 10.2 ms, 2.3 GEMVs, where 8 rows' rate scaled gave 1.5 ms), or run them as the
        fewest rows it tiles for (4 rows: 9.4 ms, as 8 rows). Per call the lesser of the two
        is what a library that has both paths can do; the GEMV per row is priced with its
        calibrated call, dispatch included, once a row.
        """
        spec = OPERATIONS[node.operation or ""]
        params = spec.complete(node.params)
        if spec.rows is None or not isinstance(params.get(spec.rows), int) or params[spec.rows] <= 1:
            return None
        rows = int(params[spec.rows])
        fewest = min((int(e.params[spec.rows]) for e in candidates), default=None)
        if fewest is None or rows >= fewest:
            return None
        one, many = (self._calibrated(self._with_rows(node, spec, n, dtype), dtype) for n in (1, fewest))
        if one is None or many is None:
            return None
        if rows * one.seconds <= many.seconds:
            seconds, bound, how = rows * one.seconds, one.bottleneck, f"{rows} x its one-row time"
        else:
            seconds, bound, how = many.seconds, many.bottleneck, f"its {fewest}-row time"
        return KernelEstimate(name=node.name, op=node.op, operation=node.operation, seconds=seconds, bottleneck=bound,
                              source=f"{rows} rows, fewer than any calibrated GEMM of its variant: {how}, "
                                     "the lesser of a GEMV a row and the fewest rows calibrated")

    @classmethod
    def _with_rows(cls, node: NodeCost, spec, rows: int, dtype: str) -> NodeCost:
        """``node`` with its row count replaced (FLOPs and bytes to match)."""
        return cls._with_params(node, spec, {spec.rows: rows}, dtype)

    @staticmethod
    def _with_params(node: NodeCost, spec, changed: dict, dtype: str) -> NodeCost:
        """``node`` with some parameters replaced (FLOPs and bytes to match)."""
        params = {**node.params, **changed}
        full = spec.complete(params)
        return node.model_copy(update={"params": params, "flops": spec.flops(full),
                                       "bytes": spec.bytes_moved(full, itemsize(dtype))})

    def _below_smallest(self, candidates, metric, query: int, use_flops: bool, seconds: float) -> tuple[float, str]:
        """A kernel smaller than every calibrated size keeps the fixed cost of a call.

        The smallest entry's efficiency, held flat below it, would scale a kernel a tenth its
        size to a tenth of its time and a tiny one to nothing, yet every call costs at least a
        dispatch. Below the smallest calibrated size the time is affine in size instead: the
        measured dispatch overhead, plus the rest of that entry's time scaled by size.
        """
        pool, size = lookup.interpolation_pool(candidates, metric, use_flops=use_flops)
        smallest = min(pool, key=size, default=None)
        if smallest is None or query >= size(smallest):
            return seconds, "interpolated between calibrated sizes"
        measured = smallest.latency.median_ms / 1e3
        fixed = min(self._dispatch_seconds(), measured)
        return fixed + (measured - fixed) * query / size(smallest), "below the smallest calibrated size"

    # ------------------------------------------------------------------ model
    def missing_ceilings(self, part: Partition) -> list[str]:
        """What the roofline of this partition needs that neither the profile nor the peaks give."""
        missing = []
        # floating-point work needs its dtype's compute roof; integer work (indices, counters)
        # is never calibrated and is timed by its traffic alone
        dtypes = sorted({node.dtype or "float32" for sg in part.subgraphs for node in sg.nodes
                         if node.kernel and node.flops and (node.dtype or "float32").startswith(FLOATING)})
        for dtype in dtypes:
            if not self._compute_ceiling(dtype):
                why = (f"no {dtype} matmul case ran" if dtype in DTYPE_NAMES
                       else f"this tool calibrates {', '.join(DTYPE_NAMES)}")
                missing.append(f"{dtype} compute ceiling ({why} and no peak GFLOPS was given)")
        # the DRAM ceiling covers every working set (a cache level falls back to it)
        if not self._bandwidth_ceiling(2**62):
            missing.append("memory bandwidth ceiling (no STREAM or triad case ran and no peak bandwidth was given)")
        return missing

    def estimate(self, part: Partition, mode: Mode = "eager") -> LatencyEstimate:
        check_mode(mode)
        missing = self.missing_ceilings(part)
        if missing:
            raise MissingCeilings(
                f"cannot predict {part.model}: the profile has no {'; no '.join(missing)}; calibrate them "
                "(python -m calibration run --operations matmul,memory) or give the peaks")
        self.notes = []
        subgraphs = []
        # What one forward touches: a kernel's weights come back for the next forward after the
        # rest of it has gone through the caches (their reuse distance)
        footprint = part.footprint_bytes()
        speedups = [sg.speedup if (mode == "fused" and sg.fused and sg.pattern) else 1.0 for sg in part.subgraphs]
        # ... and come back after the rest of the forward's time: its kernels alone, to begin with
        alone = {id(node): self._kernel(node) for sg in part.subgraphs for node in sg.nodes if node.kernel}
        forward = sum(k.seconds for k in alone.values())
        nodes = [[n for n in sg.nodes if n.kernel] for sg in part.subgraphs]
        per_subgraph = self._after_busy([
            tuple(self._with_llc_operands(
                node, self.kernel(node, reuse_bytes=None if footprint is None else footprint - weight_bytes(node),
                                  since_seconds=forward - alone[id(node)].seconds, warm=alone[id(node)]),
                footprint)
                  for node in sg_nodes)
            for sg_nodes in nodes], nodes, speedups)
        per_subgraph = self._spread(self._refetch(per_subgraph, nodes, speedups))
        for sg, kernels, speedup in zip(part.subgraphs, per_subgraph, speedups, strict=True):
            seconds = sum(k.seconds for k in kernels)
            if mode == "fused" and sg.fused and sg.speedup == 1.0:
                self._note("fused subgraphs whose pattern the profile never measured keep their unfused time")
            compute = sum(k.seconds for k in kernels if k.bottleneck == Bottleneck.COMPUTE)
            subgraphs.append(SubgraphEstimate(
                index=sg.index, name=sg.name, pattern=sg.pattern, fused=sg.fused, kernels=kernels,
                flops=sg.flops, bytes=sg.external_bytes if mode == "fused" else sum(n.bytes for n in sg.nodes),
                speedup=speedup, total_ms=seconds / speedup * 1e3,
                bottleneck=Bottleneck.COMPUTE if compute >= seconds / 2 and kernels else Bottleneck.MEMORY,
            ))
        calls_ms = part.flattened_module_calls * self._module_call_seconds(None) * 1e3
        after_busy_ms = sum(k.after_busy_seconds / s.speedup for s in subgraphs for k in s.kernels) * 1e3
        from_llc_ms = sum(k.from_llc_seconds / s.speedup for s in subgraphs for k in s.kernels) * 1e3
        refetch_ms = sum(k.refetch_seconds / s.speedup for s in subgraphs for k in s.kernels) * 1e3
        spread_ms = sum(k.spread_seconds / s.speedup for s in subgraphs for k in s.kernels) * 1e3
        steady = sum(s.total_ms for s in subgraphs) + calls_ms
        term = self.allocator_term(part)
        if mode == "fused" and term is not None and term.ms:
            self._note("fused mode keeps the eager forward's page faults: a fused runtime allocates fewer "
                       "intermediates, which the replay does not know")
        faults = term.ms if term is not None and term.ms is not None else 0.0
        return LatencyEstimate(model=part.model, mode=mode, total_ms=steady + faults, steady_ms=steady,
                               module_calls_ms=calls_ms, after_busy_ms=after_busy_ms, from_llc_ms=from_llc_ms,
                               refetch_ms=refetch_ms, spread_ms=spread_ms, allocator=term,
                               subgraphs=tuple(subgraphs), notes=tuple(self.notes))

    # ------------------------------------------------------------------ allocator
    def allocator_term(self, part: Partition) -> AllocatorTerm | None:
        """The forward's allocations replayed through this process's allocator, priced per page."""
        if part.allocations is None or self.device != "cpu":
            return None
        detected = allocator.detect()
        if part.allocations not in self._replayed:  # eager and fused estimates of one partition share it
            self._replayed[part.allocations] = allocator.replay_faults(part.allocations)
        replayed = self._replayed[part.allocations]
        if replayed is None:
            self._note("the allocation replay could not run here: page faults are not predicted")
            return AllocatorTerm(allocator=detected, fault_bytes=None, ms=None)
        volume = {"fault_bytes": replayed.pages * allocator.PAGE, "fault_bytes_low": replayed.low * allocator.PAGE,
                  "fault_bytes_high": replayed.high * allocator.PAGE}
        price = self._fault_price()
        if replayed.pages and price is None:
            self._note("the profile prices no page fault (no fill_fresh/fill pair above 32 MiB that costs "
                       "more fresh): the allocator term is left out of the total")
            return AllocatorTerm(allocator=detected, ms=None, **volume)
        low, mid, high = price or (0.0, 0.0, 0.0)
        return AllocatorTerm(allocator=detected, ms=replayed.pages * mid * 1e3, ms_low=replayed.low * low * 1e3,
                             ms_high=replayed.high * high * 1e3, **volume)

    def _fault_price(self) -> tuple[float, float, float] | None:
        """(low, median, high) seconds per 4 KiB page faulted in, from the profile.

        fill_fresh allocates and writes a block; fill writes a reused one. Above 32 MiB, the
        largest threshold glibc's defaults ever map below, every block is mapped fresh, so
        their difference is the price of its pages. Sizes disagree by up to 2x on a VM: the
        spread is the range.
        """
        if self.calibration is None:
            return None
        fresh, reused = {}, {}
        for entry in self.calibration.operation_profiles.values():
            if entry.device == self.device and entry.operation in ("fill", "fill_fresh") \
                    and entry.bytes > allocator.MMAP_THRESHOLD_MAX:
                (fresh if entry.operation == "fill_fresh" else reused)[entry.bytes] = entry.latency.median_ms / 1e3
        prices = sorted((fresh[b] - reused[b]) / (b / allocator.PAGE) for b in fresh.keys() & reused.keys())
        prices = [p for p in prices if p > 0]
        if not prices:
            return None
        return prices[0], statistics.median(prices), prices[-1]


class MissingCeilings(ValueError):
    """The profile lacks a ceiling the roofline needs: a prediction without it would be a
    fraction of the real time (dispatch costs alone), not an estimate."""


def check_mode(mode: str) -> None:
    if mode not in ("eager", "fused"):
        raise ValueError(f"Invalid mode {mode!r}; allowed: eager, fused")


class CPUMapper(Mapper):
    device = "cpu"


class GPUMapper(Mapper):
    device = "cuda"


def mapper_for(calibration: HardwareCalibration | None = None, *, peak_gflops: float | None = None,
               peak_bandwidth_gbps: float | None = None) -> Mapper:
    """The mapper of the profile's device."""
    device = calibration.metadata.device_type if calibration else "cpu"
    mapper_type = GPUMapper if device == "cuda" else CPUMapper
    return mapper_type(calibration, peak_gflops=peak_gflops, peak_bandwidth_gbps=peak_bandwidth_gbps)


def predict_latency(model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
                    calibration: HardwareCalibration | None = None, *, mode: Mode = "eager",
                    peak_gflops: float | None = None, peak_bandwidth_gbps: float | None = None) -> LatencyEstimate:
    """Partition ``model`` and estimate its latency on the calibrated device.

    Raises ValueError: MissingCeilings when the profile (and the peaks given) lack a compute
    ceiling for a dtype the model computes in or a memory bandwidth; ModelError when the
    model fails on its example inputs or cannot be traced.
    """
    check_mode(mode)
    mapper = mapper_for(calibration, peak_gflops=peak_gflops, peak_bandwidth_gbps=peak_bandwidth_gbps)
    return mapper.estimate(partition(model, example_inputs, calibration), mode=mode)


def _on_curve(points: Sequence[tuple[float, float]], at: float) -> float:
    """A (bytes or ms, value) curve at ``at``: from 0 at none to its first point, linear in log
    scale between its points, its last point's value past it; 0 without points."""
    if not points or at <= 0:
        return 0.0
    if at <= points[0][0]:
        return points[0][1] * at / points[0][0]
    return roofline.interpolate_log(at, points)


def _share_on(curve: Sequence[tuple[float, float]], at: float) -> float:
    """A (bytes or ms, share) curve's share at ``at`` (:func:`_on_curve`), between 0 and 1."""
    return min(max(_on_curve(curve, at), 0.0), 1.0)


def forward_calls(sizes: Sequence[int], speedups: Sequence[float]) -> list[tuple[int, int, range]]:
    """The calls of a forward whose subgraphs run ``sizes`` kernels each: (subgraph, its kernel
    that pays for the call, the kernels the call runs). A subgraph with a speedup other than 1
    (fused mode) is one call of all its kernels, its first paying; otherwise each kernel is a call."""
    calls: list[tuple[int, int, range]] = []
    for g, (size, speedup) in enumerate(zip(sizes, speedups, strict=True)):
        if size and speedup != 1.0:
            calls.append((g, 0, range(size)))
        else:
            calls += [(g, j, range(j, j + 1)) for j in range(size)]
    return calls


def weight_bytes(node: NodeCost) -> int:
    """The weights a conv or linear reads (0 for other kernels)."""
    p, size = node.params, itemsize(node.dtype or "float32")
    if node.operation == "conv2d" and {"COUT", "CIN", "GROUPS", "K"} <= p.keys():
        return int(p["COUT"]) * (int(p["CIN"]) // int(p["GROUPS"])) * math.prod(conv_geometry(p).kernel) * size
    if node.operation == "linear" and {"IN", "OUT"} <= p.keys():
        return int(p["IN"]) * int(p["OUT"]) * size
    return 0


def evicted_bytes(operation: str | None, params, dtype: str) -> int:
    """What a cold twin evicts of a conv or linear of these parameters: its weights and its
    output, all it moves but the input (0 for other operations)."""
    if operation not in ("conv2d", "linear"):
        return 0
    spec = OPERATIONS[operation]
    p = spec.complete(params)
    size = itemsize(dtype)
    inputs = p["N"] * p["CIN"] * p["H"] * p["W"] if operation == "conv2d" else p["B"] * p["IN"]
    return spec.bytes_moved(p, size) - inputs * size
