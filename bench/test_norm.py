"""Runs the cases of calibration/bench/test_norm.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_norm as cases

test_softmax = cases.test_softmax
test_layernorm = cases.test_layernorm
test_batchnorm = cases.test_batchnorm
