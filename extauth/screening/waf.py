"""The WAF: the OWASP Core Rule Set run by ModSecurity v3 (libmodsecurity) on the canonical request (docs/waf.md).

Rules are parsed once per policy load (`compile_waf`), one ModSecurity rule set per distinct paranoia level,
threshold and exclusion list, shared by the routes that use it. The engine always runs in `DetectionOnly`:
ModSecurity scores, extauth decides (block or detect), so both modes cost the same and the decision is ours to
audit. The binding is an optional extra (`extauth[waf]`), imported only when a policy asks for the WAF.
"""

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauth.documents.errors import ConfigIssue
from extauth.documents.loader import LoadedDocument
from extauth.documents.screening import CRS, InspectBody, ScreeningDocument, Waf, WafExclusions, WafMode
from extauth.request import Request, fold_case

#: CRS files ModSecurity cannot or need not run here: 910 needs GeoIP, which the bundled library lacks; the
#: RESPONSE-* rules inspect responses, which ext_authz never sees.
_CRS_SKIPPED = re.compile(r"REQUEST-910-|RESPONSE-")
#: CRS's blocking evaluation: it fires when the inbound anomaly score reaches the threshold.
BLOCKING_RULE = 949110
_TOTAL_SCORE = re.compile(r"Total Score: (\d+)")
#: CRS anomaly points by ModSecurity severity (CRITICAL, ERROR, WARNING, NOTICE).
_SEVERITY_SCORE = {2: 5, 3: 4, 4: 3, 5: 2}
#: The most matched rules one audit event lists: enough to tune, bounded for the log line.
_MAX_LISTED = 20
#: Engine-wide settings, before the CRS: ModSecurity only scores (extauth decides), parses JSON bodies as JSON
#: (CRS 3.3 leaves that to crs-setup.conf), also a body sent without any Content-Type (JSON APIs parse those too,
#: so it must not go uninspected; CRS 920340 only scores it 2), and admits the methods screening admits (CRS
#: 911100 would refuse PUT, PATCH and DELETE by default) and the HTTP versions Envoy speaks (CRS 920430 would
#: refuse HTTP/3).
_SETUP = """
SecRuleEngine DetectionOnly
SecRequestBodyAccess On
SecRequestBodyLimit 1048576
SecRequestBodyNoFilesLimit 1048576
SecRequestBodyLimitAction ProcessPartial
SecRequestBodyJsonDepthLimit 512
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/(?:[a-z0-9.+-]+\\+)?json" \
  "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule &REQUEST_HEADERS:Content-Type "@eq 0" \
  "id:200003,phase:1,t:none,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application(?:/soap\\+|/)|text/)xml" \
  "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecDefaultAction "phase:1,log,auditlog,pass"
SecDefaultAction "phase:2,log,auditlog,pass"
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={paranoia_level}"
SecAction "id:900110,phase:1,nolog,pass,t:none,setvar:tx.inbound_anomaly_score_threshold={threshold},\
setvar:tx.outbound_anomaly_score_threshold=4"
SecAction "id:900200,phase:1,nolog,pass,t:none,setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'"
SecAction "id:900230,phase:1,nolog,pass,t:none,\
setvar:'tx.allowed_http_versions=HTTP/1.0 HTTP/1.1 HTTP/2 HTTP/2.0 HTTP/3 HTTP/3.0'"
SecAction "id:900990,phase:1,nolog,pass,t:none,setvar:tx.crs_setup_version=334"
"""

MISSING_EXTRA = ("the WAF needs ModSecurity's Python binding, which is not installed: "
                 "pip install 'extauth[waf]' (docs/waf.md)")


@dataclass(frozen=True, slots=True)
class WafVerdict:
    """What the rules found in one request: only made when at least one rule matched."""

    #: The anomaly score reached the threshold (in `detect` mode: it would have been blocked).
    over_threshold: bool
    mode: WafMode
    anomaly_score: int
    #: `(rule id, message)` of each matched rule, in match order; the matched data is never kept (it is the
    #: attack payload, possibly with secrets).
    matches: tuple[tuple[int, str], ...]
    #: The WAF route (`path_prefix` override) that applied, or None for the policy-wide settings.
    route: str | None

    @property
    def blocks(self) -> bool:
        return self.over_threshold and self.mode == "block"

    def audit(self) -> dict[str, object]:
        """The audit event's `waf` object (docs/audit.md)."""
        listed = self.matches[:_MAX_LISTED]
        return {"mode": self.mode, "blocked": self.blocks, "over_threshold": self.over_threshold,
                "anomaly_score": self.anomaly_score, "route": self.route,
                "rule_ids": [rule_id for rule_id, _ in listed], "messages": [message for _, message in listed]}


@dataclass(frozen=True, slots=True)
class _Profile:
    """The settings one request is inspected with: a compiled rule set and what to do with its score."""

    rules: Any  # libmodsecurity.RulesSet
    mode: WafMode
    body_limit: int | None
    route: str | None


class WafEngine:
    """Compiled WAF of one policy version; `inspect` is called once per Check that screening let through."""

    __slots__ = ("_default", "_routes", "rule_count")

    def __init__(self, default: _Profile | None, routes: Sequence[tuple[str, _Profile | None]], rule_count: int):
        self._default = default
        #: Longest prefix first, so the first match is the most specific; folded, and matched on the folded path,
        #: as policy routes match by default: `/ADMIN/` is the admin route to the policy, so to the WAF too.
        self._routes = tuple(sorted(((fold_case(prefix), profile) for prefix, profile in routes),
                                    key=lambda item: len(item[0]), reverse=True))
        self.rule_count = rule_count

    def _profile(self, path: str) -> _Profile | None:
        for prefix, profile in self._routes:
            if path.startswith(prefix):
                return profile
        return self._default

    def inspect(self, request: Request) -> WafVerdict | None:
        """None when no rule matched or no WAF applies to the path; never raises on any request."""
        profile = self._profile(request.folded_path)
        if profile is None:
            return None
        transaction = _library().Transaction(_engine(), profile.rules, request.request_id or None)
        source = request.source_ip
        transaction.process_connection(str(source) if source is not None else "0.0.0.0", 0, "0.0.0.0", 0)
        uri = request.wire_path + ("?" + request.query if request.query else "")
        transaction.process_uri(uri, request.wire_method, request.http_version)
        for name, value in request.headers.items():
            if not name.startswith(":"):
                transaction.add_request_header(name, value)
        host_header = request.host
        if host_header and "host" not in request.headers:
            transaction.add_request_header("host", host_header)
        transaction.process_request_headers()
        if profile.body_limit is not None:
            body = request.body
            if body:
                transaction.append_request_body(body[:profile.body_limit])
        transaction.process_request_body()
        messages = transaction.get_rule_messages()
        if not messages:
            return None
        score, over, matches = 0, False, []
        for message in messages:
            if message.rule_id == BLOCKING_RULE:
                over = True
                found = _TOTAL_SCORE.search(message.message)
                if found:
                    score = int(found.group(1))
            else:
                matches.append((message.rule_id, message.message))
        if not over:
            score = sum(_SEVERITY_SCORE.get(message.severity, 0) for message in messages)
        return WafVerdict(over, profile.mode, score, tuple(matches), profile.route)


_ENGINE: Any = None


def _library() -> Any:
    import libmodsecurity

    return libmodsecurity


def _engine() -> Any:
    """One ModSecurity instance per process; its log callback discards the text log (the audit event has it)."""
    global _ENGINE
    if _ENGINE is None:
        engine = _library().ModSecurity()
        engine.set_connector_information("extauth")
        engine.set_log_callback(_discard)
        _ENGINE = engine
    return _ENGINE


def _discard(_line: str) -> None:
    """ModSecurity's text log would print every match on stderr; the audit event records them instead."""


def compile_waf(loaded: LoadedDocument[ScreeningDocument], issues: list[ConfigIssue]) -> WafEngine | None:
    """Parse the rules once for each distinct setting; every problem becomes a file:line issue."""
    waf = loaded.document.waf
    assert waf is not None
    try:
        _library()
    except ImportError:
        issues.append(loaded.issue(("waf", "engine"), "waf.engine", MISSING_EXTRA))
        return None
    base = loaded.file.parent
    compiled: dict[tuple[int, int, tuple[int, ...], tuple[str, ...]], Any] = {}
    counts: dict[int, int] = {}

    def rules_for(paranoia: int, threshold: int, exclusions: WafExclusions, at: tuple[str | int, ...]) -> Any:
        key = (paranoia, threshold, tuple(sorted(exclusions.rule_ids)), tuple(sorted(exclusions.tags)))
        if key not in compiled:
            compiled[key] = _load_rules(loaded, waf, base, paranoia, threshold, exclusions, at, issues, counts)
        return compiled[key]

    default_rules = rules_for(waf.paranoia_level, waf.anomaly_threshold, waf.exclusions, ("waf",))
    default = _Profile(default_rules, waf.mode, _limit(waf.inspect_body), None)
    routes: list[tuple[str, _Profile | None]] = []
    for index, route in enumerate(waf.routes):
        if not route.enabled:
            routes.append((route.path_prefix, None))
            continue
        exclusions = WafExclusions(rule_ids=waf.exclusions.rule_ids + route.exclusions.rule_ids,
                                   tags=waf.exclusions.tags + route.exclusions.tags)
        rules = rules_for(route.paranoia_level or waf.paranoia_level, route.anomaly_threshold or waf.anomaly_threshold,
                          exclusions, ("waf", "routes", index))
        body = waf.inspect_body if route.inspect_body is None else route.inspect_body
        routes.append((route.path_prefix, _Profile(rules, route.mode or waf.mode, _limit(body), route.name)))
    if any(rules is None for rules in compiled.values()):
        return None
    return WafEngine(default, routes, max(counts.values(), default=0))


def _limit(inspect_body: InspectBody | bool) -> int | None:
    return inspect_body.max_bytes if isinstance(inspect_body, InspectBody) else None


def _load_rules(loaded: LoadedDocument[ScreeningDocument], waf: Waf, base: Path, paranoia: int, threshold: int,
                exclusions: WafExclusions, at: tuple[str | int, ...], issues: list[ConfigIssue],
                counts: dict[int, int]) -> Any:
    """One RulesSet: setup, then each `rules` entry in order, then the exclusions (they must follow the rules)."""
    rules = _library().RulesSet()
    count = rules.load(_SETUP.format(paranoia_level=paranoia, threshold=threshold))
    for index, entry in enumerate(waf.rules):
        files = _crs_files(waf.crs_path) if entry == CRS else [base / entry]
        if not files:
            issues.append(loaded.issue(("waf", "crs_path"), "waf.crs_path",
                                       f"no Core Rule Set under {waf.crs_path}/rules (install Debian's "
                                       "modsecurity-crs, or set crs_path)"))
            return None
        for file in files:
            if not file.is_file():
                issues.append(loaded.issue(("waf", "rules", index), f"waf.rules[{index}]", f"{file}: no such file"))
                return None
            added = rules.load_from_uri(str(file))
            if added < 0:
                issues.append(loaded.issue(("waf", "rules", index), f"waf.rules[{index}]",
                                           f"ModSecurity rejected the rules: {rules.get_parser_error().strip()}"))
                return None
            count += added
    removals = [f"SecRuleRemoveById {rule_id}" for rule_id in exclusions.rule_ids]
    removals += [f'SecRuleRemoveByTag "{tag}"' for tag in exclusions.tags]
    if removals and rules.load("\n".join(removals)) < 0:
        issues.append(loaded.issue((*at, "exclusions"), ".".join(map(str, (*at, "exclusions"))),
                                   f"ModSecurity rejected the exclusions: {rules.get_parser_error().strip()}"))
        return None
    counts[id(rules)] = count
    return rules


def _crs_files(crs_path: str) -> list[Path]:
    return [Path(name) for name in sorted(glob.glob(str(Path(crs_path) / "rules" / "*.conf")))
            if not _CRS_SKIPPED.search(Path(name).name)]
