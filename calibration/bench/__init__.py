"""The benchmark cases, installed with the package so that a machine with only the wheel can calibrate.

Each ``test_*.py`` here is a pytest-benchmark module: ``calibrate_hardware()`` and
``python -m calibration run`` point pytest at this folder. A checkout's top-level ``bench/``
re-exports the same functions, so ``pytest bench/`` runs exactly these cases.
"""
