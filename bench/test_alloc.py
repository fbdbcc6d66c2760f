"""Runs the cases of calibration/bench/test_alloc.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_alloc as cases

test_fill_fresh = cases.test_fill_fresh
test_fill = cases.test_fill
