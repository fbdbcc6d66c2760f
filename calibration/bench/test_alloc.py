"""What a fresh output costs over a reused one: allocator page faults.

The plugin runs these before every other case (``RUN_FIRST_FAMILIES``), fresh allocations
first and largest first, so each runs before any other case has left large free blocks in
the heap: a 34 MiB request that a freed 48 MiB block can serve faults nothing in, which is
not what a model's call of that size sees.
"""

import pytest


@pytest.mark.operation("fill_fresh")
def test_fill_fresh(op_case, calibrate):
    calibrate(op_case)


@pytest.mark.operation("fill")
def test_fill(op_case, calibrate):
    calibrate(op_case)
