"""Runs the cases of calibration/bench/test_elementwise.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_elementwise as cases

test_add = cases.test_add
test_mul = cases.test_mul
test_relu = cases.test_relu
test_gelu = cases.test_gelu
test_gelu_tanh = cases.test_gelu_tanh
test_sigmoid = cases.test_sigmoid
test_silu = cases.test_silu
test_masked_fill = cases.test_masked_fill
test_where = cases.test_where
