"""Querying a profile: exact matches, interpolation between sizes, ceilings.

:class:`ProfileQueries` is mixed into :class:`~calibration.profile.schema.HardwareCalibration`;
it reads the profile's fields and the operation and pattern specs, nothing else.

The public methods check their arguments first: a parameter the operation does not have
(``pth=``) raises TypeError, a value it does not take (``M=-5``, ``metric="latency"``,
``dtype="float99"``) ValueError, each naming the value and what is allowed. What the
profile cannot answer raises :class:`NotCalibrated`, a KeyError saying why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal

from calibration.profile import roofline
from calibration.profile.entries import BENCHMARK_SOURCE, LEGACY_FAMILY, FusionCalibration, OperationCalibration
from calibration.profile.fusion import best_per_shape, median
from calibration.specs.dtypes import DTYPE_NAMES, itemsize
from calibration.specs.host import private_cache_bytes
from calibration.specs.keys import ParamValue
from calibration.specs.operations import OPERATIONS
from calibration.specs.patterns import PATTERNS, VARIANTS, current_name

Metric = Literal["compute", "bandwidth"]
METRICS = ("compute", "bandwidth")
DEVICES = ("cpu", "cuda")
# the fewest entries a point of ProfileQueries.call_spread stands on
SPREAD_GROUP = 8


class NotCalibrated(KeyError):
    """The profile holds nothing that answers the query; the message says what is missing."""

    def __str__(self) -> str:  # KeyError's own str() quotes the message
        return str(self.args[0]) if self.args else ""


def _spec(operation: str):
    try:
        return OPERATIONS[operation]
    except KeyError:
        raise NotCalibrated(
            f"unknown operation {operation!r}; known: {', '.join(sorted(OPERATIONS))}"
        ) from None


def _check_choice(what: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"Invalid {what} {value!r}; allowed: {', '.join(str(a) for a in allowed)}")


def check_query(dtype: str, device: str | None, metric: str | None = None) -> None:
    _check_choice("dtype", dtype, DTYPE_NAMES)
    if device is not None:
        _check_choice("device", device, DEVICES)
    if metric is not None:
        _check_choice("metric", metric, METRICS)


def _fits(spec, entry: OperationCalibration) -> bool:
    """Whether an entry has the parameters of the registry's operation (a predecessor's does not)."""
    return entry.family != LEGACY_FAMILY and all(name in entry.params for name in spec.param_names)


def candidates(
    cal: ProfileQueries, operation: str, dtype: str, device: str, params: Mapping[str, ParamValue]
) -> list[OperationCalibration]:
    """Entries of the same operation, dtype, device and kernel variant as ``params``."""
    spec = _spec(operation)
    want = spec.variant(spec.complete(params))
    return [
        entry
        for entry in cal.operation_profiles.values()
        if entry.operation == operation
        and entry.dtype == dtype
        and entry.device == device
        and _fits(spec, entry)
        and spec.variant(entry.params) == want
    ]


def _none_calibrated(cal: ProfileQueries, operation: str, dtype: str, device: str, what: str) -> NotCalibrated:
    legacy = [e for e in cal.operation_profiles.values() if e.operation == operation and e.family == LEGACY_FAMILY]
    if legacy:
        return NotCalibrated(
            f"the profile's {operation} entries come from the predecessor's layout, which recorded no shape "
            f"this registry can place and no efficiency of a measured ceiling (its 'efficiency' mixed compute "
            f"and bandwidth against assumed peaks); calibrate this machine to query {operation} "
            f"(python -m calibration run --operations {OPERATIONS[operation].family} -o PROFILE)")
    return NotCalibrated(f"the profile has no {operation} entries for dtype {dtype} on {device} with variant {what}")


def find_exact(
    cal: ProfileQueries, operation: str, dtype: str, device: str, params: Mapping[str, ParamValue]
) -> OperationCalibration | None:
    spec = _spec(operation)
    params = spec.complete(params)
    for entry in candidates(cal, operation, dtype, device, params):
        # an entry's optional parameters (a 1x7 conv's KW) must be the query's too
        if (all(entry.params.get(name) == value for name, value in params.items())
                and all(entry.params.get(name) == params.get(name) for name in spec.optional)):
            return entry
    return None


def _value(entry: OperationCalibration, metric: Metric) -> float | None:
    return entry.compute_efficiency if metric == "compute" else entry.bandwidth_efficiency


def interpolation_pool(pool: list[OperationCalibration], metric: Metric, *, use_flops: bool):
    """The entries an efficiency is interpolated between, and the size they are placed by.

    Sizes are FLOPs; operations that do no arithmetic (copies) use bytes. Only entries bound
    by the same roof say how well that roof is used: a skinny matmul limited by bandwidth
    reaches 6% of the compute ceiling, which says nothing about how a compute-bound size of
    the same operation uses it.
    """
    bound = roofline.Bottleneck.COMPUTE if metric == "compute" else roofline.Bottleneck.MEMORY
    pool = [entry for entry in pool if entry.bottleneck == bound] or pool
    size = (lambda e: e.flops) if use_flops else (lambda e: e.bytes)
    return [entry for entry in pool if _value(entry, metric) is not None and size(entry) > 0], size


def efficiency_at(
    cal: ProfileQueries,
    operation: str,
    dtype: str,
    device: str,
    params: Mapping[str, ParamValue],
    metric: Metric | None,
) -> float:
    spec = _spec(operation)
    params = spec.complete(params)
    missing = [name for name in spec.param_names if name not in params]
    try:
        pool = candidates(cal, operation, dtype, device, params)
        variant = spec.variant(params)
    except KeyError as exc:  # the variant is read from a parameter the query left out
        raise NotCalibrated(f"{operation} needs parameters {', '.join(missing or [str(exc)])} to interpolate") from None
    if not pool:
        raise _none_calibrated(cal, operation, dtype, device, str(variant or "(default)"))
    exact = find_exact(cal, operation, dtype, device, params) if not missing else None
    if missing and exact is None:
        raise NotCalibrated(f"{operation} needs parameters {', '.join(missing)} to interpolate")
    flops = spec.flops(params)
    nbytes = spec.bytes_moved(params, itemsize(dtype))
    if metric is None:
        if exact is not None:
            bottleneck = exact.bottleneck
        else:
            bottleneck = roofline.classify(flops, nbytes, cal.compute_ceiling(dtype), cal.bandwidth_ceiling(nbytes))
        metric = "compute" if bottleneck == roofline.Bottleneck.COMPUTE else "bandwidth"
    if exact is not None and _value(exact, metric) is not None:
        return _value(exact, metric)  # type: ignore[return-value]
    pool, size = interpolation_pool(pool, metric, use_flops=flops > 0)
    if not pool:
        raise NotCalibrated(f"no {operation} entry in the profile has a {metric} efficiency")
    query = flops if flops > 0 else nbytes
    # A bandwidth efficiency divides by the ceiling of its entry's cache level, and neighbours
    # often sit at different levels from each other and from the query. Between two entries
    # what is interpolated is the rate they reached (GB/s), which the query's own ceiling then
    # divides: two 1-row GEMVs, one in L2 at 58% of its 56 GB/s and one in L3 at 29% of
    # 114 GB/s, both ran at 32 GB/s, and their efficiencies interpolated and multiplied by the
    # L3 ceiling put a GEMV between them at 55 GB/s. Beyond the last entry the efficiency is
    # held instead: a batch norm four times the largest one's size goes to DRAM, and its rate
    # held would keep the LLC's. The result can exceed 1 for a working set partly cached.
    ceiling = cal.bandwidth_ceiling(nbytes) if metric == "bandwidth" else None
    by_rate = bool(ceiling) and all(e.bandwidth_ceiling_gbps for e in pool)
    # Between two entries the rate follows the triad sweep's shape: what is interpolated is
    # each entry's rate over the triad's at its working set, times the triad's at the query's.
    # A rate interpolated in log size alone cannot rise and fall with the caches: a 1.6 MB
    # GEMV, held by two cores' 2 MiB L2s, sat between a 256 KB one (call-bound, 58 GB/s) and a
    # 4 MiB one (half in the L3, 91 GB/s) at 75 GB/s, where the sweep ran 160 against 95 and 145
    # (alone it ran 13.5 us: 119 GB/s).
    sweep = cal.triad_sweep() if by_rate else []  # read once: at_query looks it up per entry
    triad = (lambda ws: roofline.interpolate_log(ws, sweep)) if len(sweep) >= 2 else None

    def at_query(entries: list[OperationCalibration]) -> float:
        """The efficiency (or, by rate, the GB/s) of these entries' variant at the query's size."""
        if not by_rate:
            return roofline.interpolate_log(query, [(size(e), _value(e, metric)) for e in entries])  # type: ignore[misc]
        sizes = [size(e) for e in entries]
        if not min(sizes) < query < max(sizes):  # an end's efficiency, at the query's ceiling
            end = min(sizes) if query <= min(sizes) else max(sizes)
            held = [_value(e, metric) for e, at in zip(entries, sizes, strict=True) if at == end]
            return sum(held) / len(held) * ceiling  # type: ignore[operator,arg-type]
        rates = [(e, _value(e, metric) * e.bandwidth_ceiling_gbps) for e in entries]  # type: ignore[operator]
        if triad is None:
            return roofline.interpolate_log(query, [(size(e), rate) for e, rate in rates])
        relative = roofline.interpolate_log(query, [(size(e), rate / triad(e.bytes)) for e, rate in rates])
        # never above the fastest the variant ran: a kernel limited by its own arithmetic (a
        # SiLU at 40-44 GB/s in every cache) does not speed up where the triad does
        return min(relative * triad(nbytes), max(rate for _, rate in rates))

    if spec.scale is None:
        found = at_query(pool)
    else:
        # Two steps: over size among the entries at each calibrated scale (GEMM rows), then
        # over the scale between those.
        groups: dict[float, list[OperationCalibration]] = {}
        for entry in pool:
            groups.setdefault(float(spec.scale(entry.params)), []).append(entry)
        found = roofline.interpolate_log(float(spec.scale(params)),
                                         [(at, at_query(entries)) for at, entries in groups.items()])
    return found / ceiling if by_rate else found  # type: ignore[operator]


# --------------------------------------------------------------------------- fusion


def _fusion_entries(cal: ProfileQueries, pattern: str, variant: str | None, dtype: str, device: str):
    return [
        entry
        for entry in cal.fusion_profiles.get(pattern, [])
        if entry.dtype == dtype and entry.device == device and (variant is None or entry.variant == variant)
    ]


def _query_flops(pattern: str, shape: Mapping[str, ParamValue]) -> int | None:
    spec = PATTERNS.get(pattern)
    if spec is None or not shape:
        return None
    try:
        return spec.flops(shape)
    except KeyError as exc:
        raise NotCalibrated(f"{pattern} needs parameter {exc.args[0]} to find the nearest calibrated size") from None


def _shares_of_the_most(added: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """(bytes, ms added) points, fewest bytes first, as (bytes, share of the ms added at the
    most bytes), where the share is 1; a running maximum (more traffic takes no less). [] with
    fewer than two points or nothing added at the most."""
    if len(added) < 2 or added[-1][1] <= 0:
        return []
    return _running_shares(added[:-1], added[-1][1]) + [(added[-1][0], 1.0)]


def _running_shares(added: list[tuple[Any, float]], whole: float) -> list[tuple[Any, float]]:
    """(key, ms added) points, in order, as (key, share of ``whole``): at most 1, and a running
    maximum (more of what takes it takes no less)."""
    shares, most = [], 0.0
    for key, ms in added:
        most = min(max(most, ms / whole), 1.0)
        shares.append((key, most))
    return shares


def _matches(entry: FusionCalibration, shape: Mapping[str, ParamValue]) -> bool:
    return bool(shape) and all(entry.params.get(k) == v for k, v in shape.items())


def nearest_fusion(cal, pattern, variant, dtype, device, shape):
    best = best_per_shape(_fusion_entries(cal, pattern, variant, dtype, device))
    if not best:
        return None
    for entry in best:
        if _matches(entry, shape):
            return entry
    ordered = sorted(best, key=lambda e: e.flops)
    flops = _query_flops(pattern, shape)
    if flops is None or flops <= 0:
        return ordered[len(ordered) // 2]
    return min(ordered, key=lambda e: abs(math.log(max(e.flops, 1)) - math.log(flops)))


def fusion_speedup(cal, pattern, default, variant, dtype, device, shape) -> float:
    best = best_per_shape(_fusion_entries(cal, pattern, variant, dtype, device))
    if not best:
        return default
    for entry in best:
        if _matches(entry, shape):
            return entry.speedup
    flops = _query_flops(pattern, shape)
    if flops is None or flops <= 0:
        # what fusion_profiles[pattern].speedup_factor gives too
        return median([entry.speedup for entry in best])
    return roofline.interpolate_log(flops, [(max(e.flops, 1), e.speedup) for e in best])


def _check_fusion_query(pattern: str, variant: str | None, dtype: str, device: str | None,
                        shape: Mapping[str, ParamValue]) -> str:
    """The registered name of ``pattern``; raises on a bad variant, dtype, device or shape."""
    pattern = current_name(pattern, stacklevel=3)
    check_query(dtype, device)
    if variant is not None:
        _check_choice("variant", variant, (*VARIANTS, LEGACY_FAMILY))
    spec = PATTERNS.get(pattern)
    if spec is not None:  # an unknown pattern answers with the default, as in the predecessor
        spec.check(shape)
    return pattern


def _matrix_size(params: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
    params = dict(params)
    size = params.pop("matrix_size")
    clash = [name for name in ("M", "K", "N") if name in params]
    if clash:
        raise TypeError(f"give matrix_size or {', '.join(clash)}, not both")
    warnings.warn("get_efficiency('matmul', matrix_size=N) is the predecessor's form; it means M=K=N=N: "
                  "give M, K and N", DeprecationWarning, stacklevel=3)
    return {"M": size, "K": size, "N": size, **params}


# --------------------------------------------------------------------------- the profile's methods


class ProfileQueries:
    """The query methods of a profile, mixed into ``HardwareCalibration``, whose fields they read.

    (No field annotations here: pydantic would take them as fields and reorder the JSON.)"""

    def get_operation(
        self, operation: str, *, dtype: str = "float32", device: str | None = None, **params: ParamValue
    ) -> OperationCalibration | None:
        """The entry measured at exactly these parameters, or None."""
        check_query(dtype, device)
        _spec(operation).check(params)
        return find_exact(self, operation, dtype, device or self.metadata.device_type, params)

    def get_efficiency(
        self,
        operation: str,
        *,
        metric: Literal["compute", "bandwidth"] | None = None,
        dtype: str = "float32",
        device: str | None = None,
        **params: ParamValue,
    ) -> float:
        """Efficiency at these parameters: exact entry, else interpolated in log FLOPs.

        ``metric`` picks compute or bandwidth efficiency; by default the one the roofline of
        this profile says bounds the queried shape. The predecessor's ``matrix_size=N`` for
        a matmul means ``M=K=N=N`` (with a DeprecationWarning).
        """
        check_query(dtype, device, metric)
        if operation == "matmul" and "matrix_size" in params:
            params = _matrix_size(params)
        _spec(operation).check(params)
        return efficiency_at(self, operation, dtype, device or self.metadata.device_type, params, metric)

    def get_fusion_pattern(
        self, pattern: str, *, variant: str | None = None, dtype: str = "float32", device: str | None = None,
        **shape: ParamValue,
    ) -> FusionCalibration | None:
        """The entry at this shape (or the nearest calibrated size); the fastest fused
        variant unless ``variant`` is given; None when the pattern was never calibrated."""
        pattern = _check_fusion_query(pattern, variant, dtype, device, shape)
        return nearest_fusion(self, pattern, variant, dtype, device or self.metadata.device_type, shape)

    def get_fusion_speedup(
        self, pattern: str, default: float = 1.0, *, variant: str | None = None, dtype: str = "float32",
        device: str | None = None, **shape: ParamValue,
    ) -> float:
        """Measured speedup of fusing ``pattern``: exact shape, else interpolated between
        calibrated sizes in log FLOPs; with no shape, the median over sizes; ``default``
        when the pattern was never calibrated."""
        pattern = _check_fusion_query(pattern, variant, dtype, device, shape)
        return fusion_speedup(self, pattern, default, variant, dtype, device or self.metadata.device_type, shape)

    def compute_ceiling(self, dtype: str) -> float | None:
        measured = self.measured.compute_ceiling_gflops.get(dtype)
        if measured:
            return measured
        peak = self.peak_gflops.get(dtype)
        return peak.value if peak else None

    def dram_bandwidth(self) -> float | None:
        """Measured DRAM ceiling, else the best STREAM figure, else the user's peak."""
        if "DRAM" in self.measured.bandwidth_by_level_gbps:
            return self.measured.bandwidth_by_level_gbps["DRAM"]
        if self.measured.stream_gbps:
            return max(self.measured.stream_gbps.values())
        return self.peak_bandwidth_gbps.value if self.peak_bandwidth_gbps else None

    def last_level_cache(self) -> tuple[int, str] | None:
        """(bytes, where the figure comes from) of the last-level cache as the profile's triad
        sweep saw it, where that is less than the OS reported (a share of a socket's LLC on a
        VM; :func:`roofline.effective_llc_bytes`), else as reported; None without cache sizes."""
        sizes = self.metadata.cache_sizes
        if not sizes:
            return None
        llc_name, llc = max(sizes.items(), key=lambda item: item[1])
        seen = roofline.effective_llc_bytes(dict(self.triad_sweep()), llc, self.private_cache_bytes() or 0,
                                            self._sweep_dram_gbps())
        if seen is None:
            return llc, f"{llc_name} as the OS reports it"
        points = ", ".join(f"{ws / 2**20:.0f} MiB at {gbps:.1f} GB/s" for ws, gbps in seen.points)
        return seen.capacity, (f"{llc_name} as the triad sweep saw it: {points}, between the cache's rate and "
                               f"DRAM's (the OS reports {llc / 2**20:.0f} MiB)")

    def after_evict_us(self) -> dict[str, float]:
        """Op kind (a registry operation) -> what its call paid, in us, right after the cores'
        own caches were evicted, over the same call repeated (the ``after_evict`` cases: its
        code fetched again); never below 0 (a faster call is noise)."""
        return {str(entry.params["op"]): max(0.0, entry.latency.median_ms - entry.warm_ms) * 1e3
                for entry in self._against_warm_twin("after_evict")}

    def _against_warm_twin(self, operation: str) -> list[OperationCalibration]:
        """This device's quiet entries of ``operation`` timed with a warm twin in their own rounds."""
        return [entry for entry in self.operation_profiles.values()
                if entry.operation == operation and entry.device == self.metadata.device_type
                and entry.warm_ms is not None and not entry.busy]

    def _sweep_dram_gbps(self) -> float | None:
        """DRAM's rate for reading the triad sweep: STREAM's triad, else the DRAM ceiling."""
        return self.measured.stream_gbps.get("stream_triad") or self.dram_bandwidth()

    def llc_losses(self) -> list[tuple[int, float]]:
        """(working-set bytes, share of it the LLC loses to one pass of itself), read off the
        profile's triad sweep (:func:`roofline.llc_losses`); [] without cache sizes or a sweep
        that shows the LLC."""
        below = self.private_cache_bytes()
        if not below:
            return []
        return roofline.llc_losses(dict(self.triad_sweep()), below, self._sweep_dram_gbps())

    def private_cache_bytes(self) -> int | None:
        """What the cache level below the last one holds over the run's threads (a core's L2
        each: what a benchmark's working set stays in between calls); None with fewer than
        two levels known."""
        return private_cache_bytes(self.metadata.cache_sizes, self.metadata.threads)

    def private_cache_losses(self) -> list[tuple[int, float]]:
        """(bytes of other data read, share of a working set the cores' own caches lose to
        them), from the profile's ``reread`` cases, fewest bytes first: each case's time over
        its warm twin's (timed in its own rounds), as a share of that at the most bytes read
        (all of it gone from the private caches; there the share is 1). A running maximum (more
        traffic loses no less). [] with fewer than two cases or nothing lost at the most.

        A case's time is the mean of its rounds, not their median: near the private caches'
        size a re-read either keeps its working set or loses all of it. On the 2-vCPU Xeon VM
        (4 MiB over the two L2s) the GEMV after 2 MiB ran about 13 us or 27-60, nothing between;
        25 rounds split 13 and 12 (median 14.5 us, a share of 0.03; mean 28.4, 0.26), 15 rounds
        of another run 6 and 9 (median 32.7, 0.41; mean 0.32). What a forward pays on average
        is the mean's share; the median's is a coin toss between the two."""
        return _shares_of_the_most(sorted((int(entry.params["between"]), entry.latency.mean_ms - entry.warm_ms)
                                          for entry in self._against_warm_twin("reread")))

    def busy_losses(self) -> list[tuple[int, float]]:
        """(bytes a square matmul touches, share of what a call keeps in the cores' own caches
        that running it takes), from the profile's ``after_busy`` probes that move data: each
        probe's time after an NxN matmul over its warm twin, as a share of that after the
        largest matmul (there the share is 1), keyed by the matmul's three operands (3 N^2
        elements); the median over the probes at each N, and a running maximum (a larger
        matmul takes no less). [] with fewer than two matmul sizes or nothing lost at the largest.

        A compute kernel takes far more of it than its bytes read would: on the 2-vCPU Xeon VM
        a tiny batch norm module call paid +53 us after a 16 MB read and after a 1 ms 64-channel
        3x3 conv on a 56x56 map (1.7 MB moved) alike, and +33 after a 1.8 MB 384-cube matmul,
        where reading 2 MB cost it +1."""
        by_n: dict[int, list[float]] = {}
        for entry in self._against_warm_twin("after_busy"):
            if entry.params.get("probe") == "view" or entry.dtype != "float32":
                continue
            by_n.setdefault(int(entry.params["N"]), []).append(entry.latency.median_ms - entry.warm_ms)
        size = itemsize("float32")
        return _shares_of_the_most(sorted((3 * n * n * size, median(ms)) for n, ms in by_n.items()))

    def busy_data_costs(self) -> list[tuple[float, float]]:
        """(ms of the matmul before, us a call pays per MB it moves for following it), from the
        profile's ``after_busy`` probes that move data: at each matmul size, each probe's time
        over its warm twin less the view probe's (what the call pays without data), over the
        bytes the probe moves; the median over the probes, at the median time of the matmuls
        before them. Shortest matmul first, a running maximum (a longer one takes no less), never
        below 0. [] with fewer than two matmul sizes that have the view and a data probe.

        The view probe prices what following a kernel costs a call by itself; the data is
        another matter where the cores' caches and the LLC lose a call's operands while the
        kernel before it runs. On the 2-vCPU EPYC VM (32 MiB L3) a batch norm over 1.6 MB paid
        +103 us after a 4.6 ms matmul where the view paid +16, and +7.6 after 1.3 ms."""
        by_n: dict[int, dict[str, OperationCalibration]] = {}
        for entry in self._against_warm_twin("after_busy"):
            if entry.dtype == "float32" and entry.preceding_ms:
                by_n.setdefault(int(entry.params["N"]), {})[str(entry.params["probe"])] = entry
        points = []
        for probes in by_n.values():
            view = probes.get("view")
            data = [e for name, e in probes.items() if name != "view" and e.bytes > 0]
            if view is None or not data:
                continue
            view_us = (view.latency.median_ms - view.warm_ms) * 1e3
            per_mb = median([((e.latency.median_ms - e.warm_ms) * 1e3 - view_us) / (e.bytes / 1e6) for e in data])
            points.append((median([e.preceding_ms for e in (view, *data)]), per_mb))
        if len(points) < 2:
            return []
        out, most = [], 0.0
        for ms, per_mb in sorted(points):
            most = max(most, per_mb)
            out.append((ms, most))
        return out

    def wait_losses(self) -> list[tuple[float, float]]:
        """The largest working set's curve of :meth:`wait_loss_curves` ([] without one): what
        a working set the LLC barely holds loses to time."""
        curves = self.wait_loss_curves()
        return curves[-1][1] if curves else []

    def wait_loss_curves(self) -> list[tuple[int, list[tuple[float, float]]]]:
        """(working-set bytes, [(ms in which the process touched no memory, share of it the LLC
        lost in them), shortest wait first]) for each GEMV size of the profile's ``after_wait``
        cases, smallest first: each wait's median time over the GEMV's warm time, as a share of
        that right after the LLC was flushed; at most 1 (after 50 ms the Xeon VM's GEMV ran
        slower than after a flush: the cores idle too), and a running maximum (a longer wait
        loses no less). A size without the flushed case, nothing it lost, or fewer than two
        waits has no curve. The warm time is the median of the size's warm twins (each timed
        in its case's own rounds, seconds apart): the flushed case's own twin follows the
        flush's writes and was not warm (a 4 MiB GEMV's 120 us against 73-82 in the six wait
        cases on a 2-vCPU EPYC VM, which had taken 60% off the flush's share).

        The median, not the mean the reread points take: a wait's rounds spread evenly, and
        one round the host held up (1012 us among 25 of 311-431 after 1 ms) had doubled the
        share of the shortest wait, and with it the cold time of every GEMV in a 2 ms forward."""
        sizes: dict[int, list[OperationCalibration]] = {}
        for entry in self._against_warm_twin("after_wait"):
            if entry.dtype == "float32":
                weights = int(entry.params["IN"]) * int(entry.params["OUT"]) * 4
                sizes.setdefault(weights, []).append(entry)
        curves = []
        for weights, entries in sorted(sizes.items()):
            warm_ms = median([e.warm_ms for e in entries])
            flushed = [e.latency.median_ms - warm_ms for e in entries if e.params.get("after") == "flush"]
            waits = sorted((float(e.params["ms"]), e.latency.median_ms - warm_ms)
                           for e in entries if e.params.get("after") == "wait")
            if flushed and max(flushed) > 0 and len(waits) >= 2:
                curves.append((weights, _running_shares(waits, max(flushed))))
        return curves

    def call_spread(self) -> list[tuple[float, float]]:
        """(seconds a call takes, its mean over its median), shortest first: the profile's
        kernel entries (quiet ones; not the cold, in-sequence or page-fault cases, whose rounds
        time a context) grouped by the decade of their median, a group of fewer than
        SPREAD_GROUP entries joined to the next longer one (the longest to the one before);
        each group's geometric mean median and median ratio. [] with fewer than SPREAD_GROUP
        entries.

        A forward sums its calls, and a sum of calls follows their means, not their medians:
        a call the host holds up now and then costs every forward its share. On the 2-vCPU
        EPYC VM a ResNet-18 forward at batch 1 had a median of 25.8 ms where its calls, each
        timed in place over 30-40 forwards, summed 25.2 by their medians and 26.5 by their
        means (a MobileNet-V2 13.4, 12.2 and 13.5). Per group, not per entry: one entry's mean
        is one stretch of the host's (an after_busy probe's 15 rounds had a mean 15 times its
        median), a group's median ratio is the machine's (1.04-1.06 for calls under 10 us,
        1.01-1.02 over 10 ms in three full profiles there)."""
        ratios = sorted((entry.latency.median_ms / 1e3, entry.latency.mean_ms / entry.latency.median_ms)
                        for entry in self.operation_profiles.values()
                        if entry.device == self.metadata.device_type and not entry.busy
                        and entry.family not in ("cold", "sequence", "alloc") and entry.latency.median_ms > 0
                        and entry.latency.source == BENCHMARK_SOURCE)
        groups: list[list[tuple[float, float]]] = [[]]
        for seconds, ratio in ratios:
            if len(groups[-1]) >= SPREAD_GROUP and math.floor(math.log10(seconds)) != math.floor(
                    math.log10(groups[-1][-1][0])):
                groups.append([])
            groups[-1].append((seconds, ratio))
        if len(groups) > 1 and len(groups[-1]) < SPREAD_GROUP:
            last = groups.pop()
            groups[-1] += last
        if len(groups[-1]) < SPREAD_GROUP:
            return []
        return [(math.exp(sum(math.log(s) for s, _ in group) / len(group)), median([r for _, r in group]))
                for group in groups]

    def triad_sweep(self) -> list[tuple[int, float]]:
        """(working-set bytes, GB/s) of the profile's float32 triad entries, busy ones left out."""
        return [(entry.bytes, entry.gbps) for entry in self.operation_profiles.values()
                if entry.operation == "stream_triad" and entry.dtype == "float32"
                and entry.device == self.metadata.device_type and not entry.busy and entry.gbps > 0]

    def triad_gbps(self, nbytes: int) -> float | None:
        """The triad sweep's rate at a working set of ``nbytes``, interpolated in log size
        between its points and held at its ends; None with fewer than two points."""
        return roofline.sweep_gbps(self.triad_sweep(), nbytes)

    def roofline_seconds(self, flops: int, nbytes: int, dtype: str = "float32") -> float | None:
        """A kernel's time at this profile's roofs (no efficiency); None where a needed roof is unknown."""
        return roofline.roofline_seconds(flops, nbytes, self.compute_ceiling(dtype), self.bandwidth_ceiling(nbytes))

    def bandwidth_ceiling(self, nbytes: int) -> float | None:
        """The bandwidth a working set of ``nbytes`` gets: the measured ceiling of the cache
        level it fits in, else the DRAM ceiling (see :func:`roofline.bandwidth_ceiling`)."""
        return roofline.bandwidth_ceiling(
            nbytes, self.metadata.cache_sizes, self.measured.bandwidth_by_level_gbps, self.dram_bandwidth())
