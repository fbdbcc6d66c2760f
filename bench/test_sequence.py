"""Runs the cases of calibration/bench/test_sequence.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_sequence as cases

test_after_busy = cases.test_after_busy
test_reread = cases.test_reread
test_after_evict = cases.test_after_evict
test_after_wait = cases.test_after_wait
