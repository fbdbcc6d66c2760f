"""Runs the cases of calibration/bench/test_cold.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_cold as cases

test_conv2d_cold = cases.test_conv2d_cold
test_linear_cold = cases.test_linear_cold
