"""Small calls as a forward makes them: right after a longer kernel, against the same call
right after itself (what a mapper adds to each kernel for the one before it)."""

import pytest


@pytest.mark.operation("after_busy")
def test_after_busy(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("reread")
def test_reread(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("after_evict")
def test_after_evict(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("after_wait")
def test_after_wait(op_case, calibrate):
    calibrate(op_case)
