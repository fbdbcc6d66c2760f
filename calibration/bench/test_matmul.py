"""Compute ceilings: every matmul path torch offers on the device, square and skinny shapes."""

import pytest


@pytest.mark.operation("matmul")
def test_matmul(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("linear")
def test_linear(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("bmm")
def test_bmm(op_case, calibrate):
    calibrate(op_case)
