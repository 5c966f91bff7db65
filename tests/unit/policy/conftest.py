"""Fixtures: a manual clock and policies compiled from inline YAML."""

from pathlib import Path

import pytest
from support.inline_policy import TUESDAY_MORNING, MakeEngine, engine_for

from extauth.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(TUESDAY_MORNING)


@pytest.fixture
def make_engine(tmp_path: Path, clock: ManualClock) -> MakeEngine:
    """`make_engine(routes_yaml)`: a policy document with the standard roles and these routes."""
    return lambda routes: engine_for(tmp_path, clock, routes)
