"""Fixtures: the screener with the defaults (no Screening document)."""

import pytest

from extauth.screening.compiler import compile_screening
from extauth.screening.screener import Screener


@pytest.fixture(scope="module")
def defaults() -> Screener:
    return compile_screening(())
