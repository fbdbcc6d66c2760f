"""Max, average and global average pooling."""

import pytest


@pytest.mark.operation("maxpool")
def test_maxpool(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("avgpool")
def test_avgpool(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("global_avgpool")
def test_global_avgpool(op_case, calibrate):
    calibrate(op_case)
