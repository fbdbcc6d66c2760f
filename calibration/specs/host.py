"""What machine this is: caches, cores, memory, software versions, allocator settings.

Torch-free: the STREAM sizes in the operation specs follow the last-level cache.

Everything here is read from the OS or the libraries; nothing is estimated. A value that
cannot be read is None, never a guess.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import metadata as importlib_metadata
from pathlib import Path

_CACHE_ROOT = Path("/sys/devices/system/cpu/cpu0/cache")

# STREAM's rule: each array at least four times the last-level cache. When the OS does
# not say how big the caches are, size the arrays for a 64 MiB last-level cache.
STREAM_CACHE_MULTIPLE = 4
UNKNOWN_LLC_BYTES = 64 << 20
STREAM_ITEMSIZE = 4  # the STREAM and sweep cases run in float32
TRIAD_ARRAYS = 3


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


@cache
def cache_sizes() -> dict[str, int]:
    """Data/unified cache sizes of one core by level, e.g. {'L1': 32768, 'L2': ..., 'L3': ...}."""
    sizes: dict[str, int] = {}
    if not _CACHE_ROOT.is_dir():
        return sizes
    for index in sorted(_CACHE_ROOT.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = _parse_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified"):
            sizes[f"L{level}"] = size
    return sizes


def last_level_cache() -> int | None:
    sizes = cache_sizes()
    return max(sizes.values()) if sizes else None


def stream_elements() -> int:
    """float32 elements per STREAM array: 4x the last-level cache, rounded up to 2^k."""
    target = STREAM_CACHE_MULTIPLE * (last_level_cache() or UNKNOWN_LLC_BYTES) // STREAM_ITEMSIZE
    return 1 << (target - 1).bit_length()


def private_cache_bytes(cache_sizes: Mapping[str, int], threads: int) -> int | None:
    """What the cache level below the last one holds over ``threads`` (a core's L2 each: what a
    benchmark's working set stays in between calls); None with fewer than two levels known."""
    if len(cache_sizes) < 2:
        return None
    llc_name = max(cache_sizes, key=lambda name: cache_sizes[name])
    return max(threads, 1) * max(size for name, size in cache_sizes.items() if name != llc_name)


# The channels oneDNN computes an output block of on each ATen vector ISA: its direct convs
# keep activations and weights in blocked layouts (nChw16c, Acdb16a on AVX-512; 8 on AVX2)
# and pad the output channels to a whole block. A 3x3 conv of 8 to 3 channels ran "oc3" with
# padded weights and output (ONEDNN_VERBOSE: wei Acdb16a "ap", dst aBcd16b "ap") and took as
# long as 8 to 16: 430-580 us for 1, 3, 8 or 16 output channels on 2 x 128 x 128 on the
# 2-vCPU Xeon, against 84-368 us priced by their FLOPs.
CHANNEL_BLOCKS = {"AVX512": 16, "AVX2": 8}


def channel_block(cpu_capability: str | None) -> int | None:
    """The output channels a conv computes at once on this vector ISA (ATen's
    ``get_cpu_capability``); None where it is not known."""
    return CHANNEL_BLOCKS.get((cpu_capability or "").upper())


def triad_sweep_elements(*, quick: bool) -> tuple[int, ...]:
    """Triad array lengths from L1-resident to DRAM-sized working sets.

    Full: every power of four from 1 Ki elements up to the STREAM size, and every power of
    two whose working set lies between what the caches below the LLC hold (over every usable
    CPU) and twice the LLC reported: the points the LLC's capacity is read off, where one
    alone moved it by a quarter (a 10% slower 192 MiB triad read 99 MiB where 132 was read
    an hour before). Quick: per cache level, the largest power of two whose three arrays fill
    at most half of it, then DRAM.
    """
    dram = stream_elements()
    sizes = sorted(cache_sizes().values())
    # the smallest working set twice what the caches below the LLC hold over every usable CPU
    private = private_cache_bytes(cache_sizes(), usable_cpus())
    clear = 2 * private if private is not None else None
    if not quick:
        points = set()
        n = 1 << 10
        while n < dram:
            points.add(n)
            n <<= 2
        if clear is not None:
            n = 1 << 10
            while n < dram and TRIAD_ARRAYS * STREAM_ITEMSIZE * n <= 2 * sizes[-1]:
                if TRIAD_ARRAYS * STREAM_ITEMSIZE * n >= clear:
                    points.add(n)
                n <<= 1
        return tuple(sorted(points)) + (dram,)
    points = []
    for size in sizes:
        budget = size // 2 // (TRIAD_ARRAYS * STREAM_ITEMSIZE)
        if budget >= 1:
            points.append(1 << (budget.bit_length() - 1))
    if clear is not None:
        # and the LLC's own rate, at the smallest power of two clear of the caches below. The
        # point at half the LLC can already be past what a VM's share of it holds (a 480
        # MiB-L3 Xeon's 192 MiB triad ran 34-40 GB/s, DRAM 31 and the L3 57), and without a
        # point at the cache's rate no capacity can be read off it.
        llc_point = 1 << max(clear // (TRIAD_ARRAYS * STREAM_ITEMSIZE) - 1, 0).bit_length()
        if llc_point < points[-1]:
            points.append(llc_point)
    return tuple(sorted(set(points))) + (dram,)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def physical_cores() -> int | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    cores = set()
    physical = core = None
    for line in text.splitlines() + [""]:
        if line.startswith("physical id"):
            physical = line.split(":", 1)[1].strip()
        elif line.startswith("core id"):
            core = line.split(":", 1)[1].strip()
        elif not line.strip():
            if core is not None:
                cores.add((physical, core))
            physical = core = None
    return len(cores) or None


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 2**30, 2)
    except (OSError, ValueError):
        pass
    return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def allocator_settings() -> dict[str, str | None]:
    """Settings that change how fresh pages are obtained, which moves memory-bound timings."""
    return {
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "LD_PRELOAD": os.environ.get("LD_PRELOAD"),
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX"),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
    }


def thread_settings() -> dict[str, str | None]:
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY")
    return {name: os.environ.get(name) for name in names}


def package_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def git_commit(cwd: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the run happens in; (None, None) outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=5,
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """1-minute load average: how many runnable processes competed for the CPUs."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class CpuTimes:
    """Clock ticks (USER_HZ) since boot: all CPUs busy, all CPUs in total, and this process's
    own (all its threads, and the children it waited for). A difference of two readings
    says how busy the machine was between them, and how much of that was this process."""

    busy: int
    total: int
    own: int

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy - other.busy, self.total - other.total, self.own - other.own)

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy + other.busy, self.total + other.total, self.own + other.own)

    def other_cpus(self, cpus: int | None = None) -> float | None:
        """For a difference of two readings: how many CPUs other work kept busy on average,
        other processes and the hypervisor's steal alike; None over no elapsed ticks."""
        if self.total <= 0:
            return None
        share = max(0, self.busy - self.own) / self.total
        return round(share * (cpus or os.cpu_count() or 1), 2)


def cpu_times() -> CpuTimes | None:
    """This moment's :class:`CpuTimes`, from /proc/stat and /proc/self/stat; None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # after the parenthesised command name: field 3 (state) first; utime, stime, cutime, cstime are 14-17
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        own_ticks = sum(int(v) for v in own[11:15])
    except (OSError, ValueError, IndexError):
        return None
    # guest time is already counted in user and nice (fields 9 and 10): leave it out of the total
    fields = fields[:8]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return CpuTimes(busy=sum(fields) - idle, total=sum(fields), own=own_ticks)


def busy_cpus(interval: float = 0.2) -> float | None:
    """How many CPUs other work keeps busy, sampled over ``interval`` while this process sleeps.

    Unlike the load average (a 1-minute mean, still high right after a previous run ended),
    this says what is competing now.
    """
    import time

    first = cpu_times()
    time.sleep(interval)
    second = cpu_times()
    if first is None or second is None:
        return None
    return (second - first).other_cpus()


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 inside the block: torch's profiler prints from C++ there."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
