"""Reloads: any failure is a rejected reload (event, metric, last good policy serving), off the loop, one at a time."""

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from extauth.bundle import compiled as compiled_module
from extauth.bundle import store as store_module
from extauth.bundle.store import PolicyStore
from extauth.clock import SystemClock
from extauth.metrics import CheckMetrics, RedisMetrics
from extauth.metrics.collector import ExtauthCollector

HEAD = "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\n"
GOOD = HEAD + "routes:\n  - {name: open, public: true}\n"
RECURSIVE_ALIAS = HEAD + "routes: &loop [*loop]\n"


class Recorder:
    """The `notify` hook: every operational event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    return path


def failing_compile_step(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Make one compile step (the rate-limit plan) raise, as a bug in a compiler would."""
    def broken(*args: object) -> None:
        raise error
    monkeypatch.setattr(compiled_module, "RateLimitPlan", broken)


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


async def test_an_unexpected_exception_while_compiling_is_a_rejected_reload(
        policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A RuntimeError in a compile step rejects the reload with an event and a count; the old policy serves on."""
    recorder = Recorder()
    store = PolicyStore(policy_file, SystemClock(), notify=recorder)
    serving = store.current
    failing_compile_step(monkeypatch, RuntimeError("compiler bug"))
    policy_file.write_text(GOOD + "# edited\n")
    assert await store.reload("sighup") is False
    assert store.current is serving
    assert store.stats.rejected == {"invalid": 0, "internal_error": 1} and store.stats.failures == 1
    assert recorder.events == [("policy_reload_failed", {
        "trigger": "sighup", "reason": "internal_error", "serving_version": serving.version,
        "errors": [f"{policy_file}: unexpected RuntimeError while loading: compiler bug"]})]
    monkeypatch.undo()
    assert await store.reload("sighup") is True
    assert store.current.version != serving.version


async def test_an_invalid_file_is_a_rejected_reload_naming_file_and_line(policy_file: Path) -> None:
    """A recursive alias is rejected as `invalid`, with the file:line error in the event."""
    recorder = Recorder()
    store = PolicyStore(policy_file, SystemClock(), notify=recorder)
    policy_file.write_text(RECURSIVE_ALIAS)
    assert await store.reload("sighup") is False
    assert store.stats.rejected == {"invalid": 1, "internal_error": 0}
    [(event, fields)] = recorder.events
    assert (event, fields["reason"]) == ("policy_reload_failed", "invalid")
    assert fields["errors"] == [f"{policy_file}:4: YAML anchors and aliases are not allowed (anchor &loop)"]


async def test_the_watch_keeps_running_through_every_kind_of_rejected_reload(
        policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid edit, then an edit that crashes a compile step, then a good edit: the last one is served."""
    store = PolicyStore(policy_file, SystemClock())
    first = store.current.version
    watch = asyncio.create_task(store.watch(0.01))
    try:
        policy_file.write_text(RECURSIVE_ALIAS)
        await eventually(lambda: store.stats.rejected.get("invalid") == 1)
        failing_compile_step(monkeypatch, RecursionError("maximum recursion depth exceeded"))
        policy_file.write_text(GOOD + "# crashes the compiler\n")
        await eventually(lambda: store.stats.rejected.get("internal_error") == 1)
        assert store.current.version == first and not watch.done()
        monkeypatch.undo()
        policy_file.write_text(GOOD + "# good again\n")
        await eventually(lambda: store.stats.reloads == 1)
        assert store.current.version != first and not watch.done()
    finally:
        watch.cancel()


async def test_reloads_run_one_at_a_time(policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGHUP requests and direct reloads issued together compile one after another, never concurrently; the
    requests made while one waits for its turn join it."""
    store = PolicyStore(policy_file, SystemClock())
    active, most = 0, 0
    guard = threading.Lock()
    compile_policy = store_module.compile_policy

    def tracked(*args: Any) -> Any:
        nonlocal active, most
        with guard:
            active += 1
            most = max(most, active)
        time.sleep(0.005)  # room for another reload to overlap, if anything let it
        try:
            return compile_policy(*args)
        finally:
            with guard:
                active -= 1

    monkeypatch.setattr(store_module, "compile_policy", tracked)
    for _ in range(3):
        store.request_reload("sighup")
    results = await asyncio.gather(*(store.reload("test") for _ in range(5)))
    await eventually(lambda: store.stats.reloads == 6)
    assert results == [True] * 5 and most == 1 and store.stats.by_trigger == {"sighup": 1, "test": 5}
    store.request_reload("sighup")
    await eventually(lambda: store.stats.reloads == 7)  # a request after the waiting one started is its own


async def test_compiling_runs_off_the_event_loop(policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a reload compiles, the loop keeps running: a compile that waits for the loop to act completes."""
    store = PolicyStore(policy_file, SystemClock())
    loop_acted = threading.Event()
    seen: dict[str, object] = {}
    compile_policy = store_module.compile_policy

    def waits_for_the_loop(*args: Any) -> Any:
        seen["thread"] = threading.get_ident()
        seen["loop_acted"] = loop_acted.wait(timeout=30)  # would time out if this ran on the loop
        return compile_policy(*args)

    monkeypatch.setattr(store_module, "compile_policy", waits_for_the_loop)
    reload = asyncio.create_task(store.reload("sighup"))
    await eventually(lambda: "thread" in seen)
    loop_acted.set()
    assert await reload is True
    assert seen == {"thread": seen["thread"], "loop_acted": True} and seen["thread"] != threading.get_ident()


async def test_rejected_reloads_are_counted_by_reason_in_the_metrics(
        policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`extauth_policy_reload_rejections_total{reason}` counts invalid and internal_error rejections apart."""
    store = PolicyStore(policy_file, SystemClock())
    assert scraped(store)[("extauth_policy_reload_rejections_total", (("reason", "internal_error"),))] == 0
    policy_file.write_text(RECURSIVE_ALIAS)
    await store.reload("sighup")
    await store.reload("sighup")
    policy_file.write_text(GOOD)
    failing_compile_step(monkeypatch, ValueError("odd"))
    await store.reload("file_change")
    found = scraped(store)
    assert found[("extauth_policy_reload_rejections_total", (("reason", "invalid"),))] == 2
    assert found[("extauth_policy_reload_rejections_total", (("reason", "internal_error"),))] == 1
    assert found[("extauth_policy_reloads_total", (("result", "failed"),))] == 3


def scraped(store: PolicyStore) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExtauthCollector(checks=CheckMetrics(), redis=RedisMetrics(), policy=store))
    return {(sample.name, tuple(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for sample in family.samples}


async def test_a_signal_already_answered_by_a_later_begun_reload_does_not_reload_again(policy_file: Path) -> None:
    """A SIGHUP that waits while the watch begins a reload of the same edit is answered by that reload: one
    rejection event for one broken edit, not two."""
    events: list[str] = []
    store = PolicyStore(policy_file, SystemClock(), notify=lambda event, **fields: events.append(event))
    policy_file.write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: x}\nroutes: [{name: r}]\n")
    async with store._serial:  # held, as by a reload in progress
        store.request_reload("sighup")
        watch_reload = asyncio.create_task(store._reload("file_change"))  # what the watch runs
        await asyncio.sleep(0)
    await watch_reload
    await asyncio.sleep(0.05)
    assert events == ["policy_reload_failed"] and store.stats.by_trigger == {"file_change": 1}
