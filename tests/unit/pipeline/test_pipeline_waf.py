"""The WAF's place in the Check path: after authorization, on allowed requests only; block, detect and off."""

import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from google.rpc import code_pb2
from support.checks import check_request
from test_pipeline import started_pipeline

from extauth.bundle.store import PolicyStore
from extauth.clock import SystemClock
from extauth.devstack.gateway import DEMO_POLICIES
from extauth.devtools.certs import DevCerts, create_dev_certs

ATTACK = "/public/get?id=" + quote("1' OR 1=1--")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


def policies(tmp_path: Path, waf: str | None) -> PolicyStore:
    """The demo policies with `waf.yaml` replaced by `waf` (None: removed, the WAF off)."""
    directory = tmp_path / "policies"
    shutil.copytree(DEMO_POLICIES, directory, ignore=shutil.ignore_patterns("tests"))
    if waf is None:
        (directory / "waf.yaml").unlink()
    else:
        (directory / "waf.yaml").write_text(waf)
    return PolicyStore(directory, SystemClock())


async def test_an_attack_on_an_allowed_route_is_403_waf_blocked_and_counted_per_rule(certs: DevCerts) -> None:
    """The demo's CRS blocks SQL injection on the public route: 403 `waf_blocked`, rule `waf/942100`, the WAF's
    time recorded as its own phase, and the rule id counted under `block`."""
    pipeline, sink = await started_pipeline(certs)
    response = await pipeline.check(check_request(ATTACK))
    assert response.denied_response.status.code == 403
    event = sink.events[-1]
    assert (event["reason"], event["rule"], event["route"]) == ("waf_blocked", "waf/942100", "demo/public")
    assert "waf" in event["timings_us"]
    assert pipeline.metrics.waf_matches == {("942100", "block"): 1}


async def test_a_request_already_denied_is_not_inspected(certs: DevCerts) -> None:
    """An attack without a token on /api/ is the 401 it would be anyway: ModSecurity never runs for it."""
    pipeline, sink = await started_pipeline(certs)
    response = await pipeline.check(check_request("/api/orders?id=" + quote("1' OR 1=1--")))
    assert response.denied_response.status.code == 401
    assert "waf" not in sink.events[-1] and "waf" not in sink.events[-1]["timings_us"]
    assert pipeline.metrics.waf_matches == {}


async def test_detect_mode_allows_and_audits_what_would_have_been_blocked(certs: DevCerts, tmp_path: Path) -> None:
    """`mode: detect`: the attack is allowed; its event carries the verdict and the rule is counted as `detect`."""
    store = policies(tmp_path, "apiVersion: extauth/v1\nkind: Screening\nmetadata: {name: waf}\nwaf: {mode: detect}\n")
    pipeline, sink = await started_pipeline(certs, store)
    response = await pipeline.check(check_request(ATTACK))
    assert response.status.code == code_pb2.OK
    waf = sink.events[-1]["waf"]
    assert (waf["mode"], waf["blocked"], waf["over_threshold"], waf["rule_ids"]) == ("detect", False, True, [942100])
    assert pipeline.metrics.waf_matches == {("942100", "detect"): 1}


async def test_without_a_waf_the_check_path_is_unchanged(certs: DevCerts, tmp_path: Path) -> None:
    """No `waf` section: the same request is allowed, with no WAF phase and no `waf` field in the event."""
    pipeline, sink = await started_pipeline(certs, policies(tmp_path, None))
    response = await pipeline.check(check_request(ATTACK))
    assert response.status.code == code_pb2.OK
    assert "waf" not in sink.events[-1] and "waf" not in sink.events[-1]["timings_us"]
