"""Facts the docs state about the tool's output, checked against what the tool emits."""

import json
import re
from pathlib import Path

from extauth.bundle.compiled import compile_policy
from extauth.clock import SystemClock
from extauth.devstack.gateway import DEMO_POLICIES
from extauth.ratelimit import MemoryStorage, RateLimiter
from extauth.ratelimit.phase import RateLimitPhase
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

DOCS = Path(__file__).parents[3] / "docs"


def documented_fields(doc: str, pattern: str) -> set[str]:
    """The names inside the first `{a, b, c}` that follows `pattern` in docs/`doc`."""
    match = re.search(pattern + r"[^{]*\{([a-z_, ]+)\}", (DOCS / doc).read_text())
    assert match, f"docs/{doc} no longer describes {pattern}"
    return {name.strip() for name in match.group(1).split(",")}


async def test_audit_rate_limit_object_is_described_alike_in_both_docs_and_the_sample() -> None:
    """audit.md's table and sample event and ratelimit.md list exactly the fields the rate-limit phase writes."""
    policy = compile_policy(DEMO_POLICIES, SystemClock())
    request = Request(check_request("/api/limited"))
    decision = policy.engine.authorize(request, principal("alice", ["reader"]))
    decision = await RateLimitPhase(RateLimiter(MemoryStorage(), SystemClock())).apply(policy.limits, request,
                                                                                      decision)
    written = set(decision.rate_limit)
    assert written == {"degraded", "key", "limit", "period_seconds", "remaining"}
    assert documented_fields("audit.md", r"\| `rate_limit` \|") == written
    assert documented_fields("ratelimit.md", r"as `rate_limit:") == written
    sample = json.loads(re.search(r'```json\n(\{"schema_version":1,"event":"decision".*?)```',
                                  (DOCS / "audit.md").read_text(), re.S).group(1))
    assert set(sample["rate_limit"]) == written
    for doc in ("audit.md", "ratelimit.md"):
        assert "`shadow_rejections`" in (DOCS / doc).read_text()


def test_ratelimit_doc_names_the_default_failure_mode_the_schema_has() -> None:
    """ratelimit.md calls exactly one failure mode the default, and it is the policy schema's default."""
    from extauth.documents.policy import RateLimit

    text = (DOCS / "ratelimit.md").read_text()
    defaults = set(re.findall(r"`(open|closed|local)`[^|\n]{0,30}\(?(?:the |a policy limit's )?default", text))
    assert defaults == {RateLimit.model_fields["failure_mode"].default}


def test_metrics_doc_lists_the_reload_triggers_the_tool_emits() -> None:
    """metrics.md's trigger labels are the ones the file watch, SIGHUP and the admin API pass to a reload."""
    source = "\n".join(path.read_text() for path in (Path(__file__).parents[3] / "extauth").rglob("*.py"))
    emitted = set(re.findall(r'(?:_reload|request_reload)\("([a-z_]+)"\)', source))
    match = re.search(r"`trigger` \(([a-z_, ]+)\)", (DOCS / "metrics.md").read_text())
    documented = {name.strip() for name in match.group(1).split(",")} if match else set()
    assert documented == emitted == {"file_change", "sighup", "admin"}
