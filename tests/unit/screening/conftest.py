"""Fixtures: the screener with the defaults (no Screening document)."""

import pytest

from extauth.screening.screener import Screener, compile_screening


@pytest.fixture(scope="module")
def defaults() -> Screener:
    return compile_screening(())
