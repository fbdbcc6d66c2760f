"""The steady heap cases are timed on, and the mapping heap the alloc family prices pages on.

Each check runs in a child process: mallopt settings last for the life of a process, and this
one replays allocations in forks of itself.
"""

import subprocess
import sys

import pytest

from calibration.measure import heap

CHILD = """
import resource, torch
from calibration.measure import heap

def faults_per_call(calls=5):
    for _ in range(20):  # a 48 MiB output, past any threshold glibc maps below; the heap settles
        torch.empty(48 << 18).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        torch.empty(48 << 18).fill_(1.0)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls

with heap.mapping_fresh() as took:  # first, as a calibration run times the alloc family
    print(took, round(faults_per_call()))
print(heap.set_steady(), round(faults_per_call()))
"""


@pytest.mark.skipif(heap._mallopt() is None, reason="glibc's mallopt only")
def test_a_steady_heap_reuses_a_freed_block_and_the_mapping_one_faults_it_in_again():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout.split()
    mapping_took, mapping, steady_took, steady = out
    assert steady_took == "True" and mapping_took == "True"
    pages = (48 << 20) // 4096
    assert int(mapping) > pages // 2  # mapped fresh each call: every page faulted in again
    assert int(steady) < pages // 100  # the freed block comes back: next to no faults


def test_without_glibc_nothing_is_changed_and_it_says_so(monkeypatch):
    monkeypatch.setattr(heap, "_mallopt", lambda: None)
    assert heap.set_steady() is False and heap.set_mapping() is False
    with heap.mapping_fresh() as took:
        assert took is False


OPERANDS_CHILD = """
import os, torch
from calibration.measure import heap

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

with heap.operands_mapped() as untouched:  # glibc's own heap: left as it is
    pass
heap.set_steady()
base = rss_mib()
with heap.operands_mapped() as took:
    block = torch.ones(64 << 20)  # 256 MiB, as a STREAM array or a flush buffer
held = rss_mib()
del block
after_mapped = rss_mib()
block = torch.ones(64 << 20)  # the same block on the steady heap, after the context
del block
after_steady = rss_mib()
print(untouched, took, round(held - base), round(after_mapped - base), round(after_steady - base))
"""


@pytest.mark.skipif(heap._mallopt() is None, reason="glibc's mallopt only")
def test_operands_mapped_go_back_to_the_os_and_the_heap_is_steady_again():
    out = subprocess.run([sys.executable, "-c", OPERANDS_CHILD], capture_output=True, text=True, check=True)
    untouched, took, held, after_mapped, after_steady = out.stdout.split()
    assert untouched == "False" and took == "True"
    assert int(held) > 200  # the block was in memory while the case held it
    assert int(after_mapped) < 50  # freed: unmapped, back to the OS
    assert int(after_steady) > 200  # steady again: a freed heap block stays in the process
