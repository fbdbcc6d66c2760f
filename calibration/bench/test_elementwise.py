"""Element-wise operations on preallocated outputs (bandwidth, not page faults)."""

import pytest


@pytest.mark.operation("add")
def test_add(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("mul")
def test_mul(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("relu")
def test_relu(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("gelu")
def test_gelu(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("gelu_tanh")
def test_gelu_tanh(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("sigmoid")
def test_sigmoid(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("silu")
def test_silu(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("masked_fill")
def test_masked_fill(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("where")
def test_where(op_case, calibrate):
    calibrate(op_case)
