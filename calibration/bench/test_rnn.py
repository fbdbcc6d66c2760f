"""Fused recurrent layers: an nn.LSTM layer, which oneDNN runs as one kernel on the CPU."""

import pytest


@pytest.mark.operation("lstm")
def test_lstm(op_case, calibrate):
    calibrate(op_case)
