"""Runs the cases of calibration/bench/test_pool.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_pool as cases

test_maxpool = cases.test_maxpool
test_avgpool = cases.test_avgpool
test_global_avgpool = cases.test_global_avgpool
