"""2-D convolutions from ResNet-18 and MobileNet-V2 layers, eval mode, no autograd."""

import pytest


@pytest.mark.operation("conv2d")
def test_conv2d(op_case, calibrate):
    calibrate(op_case)
