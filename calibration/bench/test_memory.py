"""Memory bandwidth: the four STREAM kernels at 4x the last-level cache, and a triad sweep
from L1-resident to DRAM-sized arrays (sizes read from this machine's caches); per-call
dispatch costs, and what an nn.Module call costs over the kernel it runs."""

import pytest


@pytest.mark.operation("stream_copy")
def test_stream_copy(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("stream_scale")
def test_stream_scale(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("stream_add")
def test_stream_add(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("stream_triad")
def test_stream_triad(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("dispatch")
def test_dispatch(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("module_call")
def test_module_call(op_case, calibrate):
    calibrate(op_case)

