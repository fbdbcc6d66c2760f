"""Softmax and normalisation layers (batch norm in eval mode)."""

import pytest


@pytest.mark.operation("softmax")
def test_softmax(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("layernorm")
def test_layernorm(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("batchnorm")
def test_batchnorm(op_case, calibrate):
    calibrate(op_case)
