"""Runs the cases of calibration/bench/test_matmul.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_matmul as cases

test_matmul = cases.test_matmul
test_linear = cases.test_linear
test_bmm = cases.test_bmm
