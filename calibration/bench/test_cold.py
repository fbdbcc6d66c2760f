"""Convolutions and linears as a model whose forward overflows the last-level cache runs them:
weights and output evicted, the input just read (the warm grids' shapes, for a mapper's
cold / warm ratio)."""

import pytest


@pytest.mark.operation("conv2d_cold")
def test_conv2d_cold(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("linear_cold")
def test_linear_cold(op_case, calibrate):
    calibrate(op_case)
