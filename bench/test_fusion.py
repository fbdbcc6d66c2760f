"""Runs the cases of calibration/bench/test_fusion.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_fusion as cases

test_linear_fusion = cases.test_linear_fusion
test_conv_fusion = cases.test_conv_fusion
test_attention_fusion = cases.test_attention_fusion
test_elementwise_fusion = cases.test_elementwise_fusion
