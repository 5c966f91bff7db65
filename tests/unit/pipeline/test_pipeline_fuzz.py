"""Hostile requests through the whole in-process Check pipeline: always a well-formed answer, never a crash."""

import asyncio
import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pipeline import DEMO_POLICIES, authentication

from extauth.audit.sink import MemorySink
from extauth.bundle.store import PolicyStore
from extauth.clock import SystemClock
from extauth.devtools.certs import create_dev_certs
from extauth.identity.authenticator import Authenticator
from extauth.pipeline import Pipeline
from extauth.respond import Responder
from extauth.tools.synthetic import check_request

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
PATHS = st.one_of(TEXT.map(lambda text: "/" + text), st.sampled_from([
    "/api/orders", "/public/x", "/admin/..%2f..%2fetc", "/api/tenants/%00/orders/1", "/%2e%2e/admin", "/" + "a" * 9000,
]))
HEADERS = st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), TEXT, max_size=8)
AUTHORIZATION = st.one_of(st.none(), TEXT, TEXT.map(lambda text: "Bearer " + text),
                          st.just("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0."))


Running = tuple[Pipeline, MemorySink, asyncio.AbstractEventLoop]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One pipeline for every example (its own loop: hypothesis drives a synchronous test)."""
    certs = create_dev_certs(tmp_path_factory.mktemp("certs"))
    loop = asyncio.new_event_loop()
    authenticator = Authenticator(authentication(certs), SystemClock())
    loop.run_until_complete(authenticator.start())
    sink = MemorySink()
    pipeline = Pipeline(authenticator, PolicyStore(DEMO_POLICIES, SystemClock()),
                        Responder(authentication(certs).forward), sink, "fuzz/0")
    yield pipeline, sink, loop
    loop.run_until_complete(authenticator.stop())
    loop.close()


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "TRACE", "BREW", ""]), path=PATHS, headers=HEADERS,
       authorization=AUTHORIZATION)
def test_any_request_gets_a_well_formed_answer_and_one_audit_event(
        running: Running, method: str, path: str, headers: dict[str, str], authorization: str | None) -> None:
    """Whatever the method, path, headers or token, Check answers allow or a JSON deny (never 500) and audits once."""
    pipeline, sink, loop = running
    if authorization is not None:
        headers = {**headers, "authorization": authorization}
    before = len(sink.events)
    response = loop.run_until_complete(pipeline.check(check_request(path, method, headers=headers)))
    assert len(sink.events) == before + 1
    event = sink.events[-1]
    assert event["reason"] != "internal_error", event
    if response.HasField("denied_response"):
        body = json.loads(response.denied_response.body)
        assert body["reason"] == event["reason"] and response.denied_response.status.code == event["status"]
    else:
        assert response.HasField("ok_response") and event["decision"] == "allow"

