"""Fixtures for the entry points' tests: a pytester folder holding the dispatch bench file."""

from __future__ import annotations

import pytest
from factories import DISPATCH_BENCH


@pytest.fixture
def bench(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester directory holding the dispatch bench file (``test_bench.py``)."""
    # The runs need pytest-benchmark's fixture from its entry point.
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(test_bench=DISPATCH_BENCH)
    return pytester
