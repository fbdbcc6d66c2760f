"""Runs the cases of calibration/bench/test_conv.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_conv as cases

test_conv2d = cases.test_conv2d
