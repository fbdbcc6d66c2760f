"""Runs the cases of calibration/bench/test_rnn.py, the copy installed with the package.

Assigned in their definition order, the order pytest collects them in.
"""

from calibration.bench import test_rnn as cases

test_lstm = cases.test_lstm
