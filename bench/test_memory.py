"""Runs the cases of calibration/bench/test_memory.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_memory as cases

test_stream_copy = cases.test_stream_copy
test_stream_scale = cases.test_stream_scale
test_stream_add = cases.test_stream_add
test_stream_triad = cases.test_stream_triad
test_dispatch = cases.test_dispatch
test_module_call = cases.test_module_call
