"""The `peer:` condition and the CEL `peer` variable (docs/client-certificates.md): the verified client
certificate's SPIFFE ID compared as an identity, so no other spelling of an ID matches a rule written for it and no
spelling that leaves a prefix (dot segments, percent-encoding) falls under it."""

from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.inline_policy import MakeEngine, decide, engine_for

from extauth.authorization.engine import PolicyEngine
from extauth.clock import ManualClock
from extauth.devtools.certs import CLIENT_SPIFFE_ID, DevCerts, create_dev_certs, issue_client_certificate
from extauth.documents.syntax import spiffe_id
from extauth.identity.peer import peer_certificate
from extauth.reasons import Reason

CLIENT = "spiffe://corp/ns/demo/sa/client"
SHOP = "spiffe://corp/ns/shop/"
ROUTES = f"""\
routes:
  - name: jobs
    match: {{path: {{prefix: /jobs/}}}}
    public: true
    rules:
      - name: the-client
        when: {{peer: ["{CLIENT}"]}}
  - name: shop
    match: {{path: {{prefix: /shop/}}}}
    public: true
    rules:
      - name: the-shop-namespace
        when: {{peer: ["{SHOP}*"]}}
"""
SETTINGS = settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def engine(make_engine: MakeEngine) -> PolicyEngine:
    return make_engine(ROUTES)


def _percent_encode_some(draw: st.DrawFn, text: str) -> str:
    """`text` with at least one character percent-encoded (either hex case): `/` becomes `%2F`, `.` `%2e`."""
    positions = draw(st.sets(st.integers(0, len(text) - 1), min_size=1, max_size=3))
    upper = draw(st.booleans())
    return "".join((f"%{ord(char):02X}" if upper else f"%{ord(char):02x}") if index in positions else char
                   for index, char in enumerate(text))


@st.composite
def respellings(draw: st.DrawFn, canonical: str) -> str:
    """Another way to write `canonical` that a URI parser, a mesh or an upstream might read as the same ID."""
    scheme, authority_and_path = canonical.split("://")
    authority, _, path = authority_and_path.partition("/")
    segments = path.split("/")
    kind = draw(st.sampled_from(["encode", "case", "dots", "empty", "authority", "suffix", "lookalike"]))
    if kind == "encode":
        path = _percent_encode_some(draw, path)
    elif kind == "case":
        flip = draw(st.sampled_from(["scheme", "authority"]))
        if flip == "scheme":
            scheme = scheme.upper()
        else:
            authority = authority.upper()
    elif kind == "dots":
        at = draw(st.integers(0, len(segments)))
        segments[at:at] = draw(st.sampled_from([["."], ["x", ".."], [".", "."], [segments[0], ".."]]))
        path = "/".join(segments)
    elif kind == "empty":
        at = draw(st.integers(0, len(segments)))
        segments[at:at] = [""]
        path = "/".join(segments)
    elif kind == "authority":
        authority = draw(st.sampled_from([f"{authority}:443", f"u@{authority}", f"{authority}.", f"{authority}:"]))
    elif kind == "suffix":
        path += draw(st.sampled_from(["/", "?x=1", "#f", " ", "\t", "\n", "%00", "/."]))
    else:
        at = draw(st.integers(0, len(path) - 1))
        lookalike = {"a": "а", "c": "с", "e": "е", "o": "о", "s": "ѕ", "i": "і"}.get(path[at], "\uff0f")
        path = path[:at] + lookalike + path[at + 1:]
    return f"{scheme}://{authority}/{path}"


@SETTINGS
@given(data=st.data())
def test_no_other_spelling_of_an_id_matches_a_rule_written_for_it(engine: PolicyEngine, data: st.DataObject) -> None:
    """Case, percent-encoding, dot or empty segments, ports, user info, suffixes and look-alike letters: none of
    them is the listed ID, whichever identity (if any) the spelling turns out to be."""
    spelling = data.draw(respellings(CLIENT))
    assert spelling != CLIENT
    decision = decide(engine, None, "/jobs/1", peer=spelling)
    assert (decision.allowed, decision.reason) == (False, Reason.FORBIDDEN)


@SETTINGS
@given(data=st.data(), below=st.sampled_from(["sa/checkout", "sa/x/y"]))
def test_no_non_canonical_spelling_falls_under_a_prefix(engine: PolicyEngine, data: st.DataObject,
                                                        below: str) -> None:
    """A spelling of an ID below `ns/shop/*` that is not canonical is no identity, so it is not below anything."""
    spelling = data.draw(respellings(SHOP + below))
    if spiffe_id(spelling) is not None:
        return  # another canonical ID (a path segment in another case, say): decided as that ID, tested below
    assert not decide(engine, None, "/shop/1", peer=spelling).allowed


@st.composite
def escapes(draw: st.DrawFn) -> str:
    """`ns/shop/` followed by a way back up (`../`, `%2e%2e%2f`, `./../`, ...) and another namespace's workload."""
    climb = draw(st.sampled_from(["../", "./../", "../../ns/", "x/../../"]))
    if draw(st.booleans()):
        climb = _percent_encode_some(draw, climb)
    return SHOP + climb + draw(st.sampled_from(["admin/sa/root", "ns/admin/sa/root", "shop/sa/x"]))


@SETTINGS
@given(spelling=escapes())
def test_a_path_that_climbs_out_of_a_prefix_never_matches_it(engine: PolicyEngine, spelling: str) -> None:
    """`spiffe://corp/ns/shop/../admin/...` starts with the prefix's text but names no identity: denied (the
    text comparison this replaced admitted it)."""
    assert not decide(engine, None, "/shop/1", peer=spelling).allowed


@SETTINGS
@given(suffix=st.text(max_size=20))
def test_below_a_prefix_means_a_canonical_id_with_more_segments(engine: PolicyEngine, suffix: str) -> None:
    """Whatever follows `ns/shop/`: allowed exactly when the whole is a canonical SPIFFE ID (so more segments)."""
    spelling = SHOP + suffix
    assert decide(engine, None, "/shop/1", peer=spelling).allowed == (spiffe_id(spelling) is not None)


def test_the_canonical_id_and_ids_below_the_prefix_match(engine: PolicyEngine) -> None:
    """The positive side of the properties above."""
    assert decide(engine, None, "/jobs/1", peer=CLIENT).allowed
    assert decide(engine, None, "/shop/1", peer=SHOP + "sa/checkout").allowed
    assert not decide(engine, None, "/shop/1", peer="spiffe://corp/ns/shopping/sa/x").allowed
    assert not decide(engine, None, "/shop/1", peer=SHOP.rstrip("/")).allowed


# --- the certificate's attributes ---

@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


def _certificate_engine(tmp_path: Path, at: float) -> PolicyEngine:
    return engine_for(tmp_path, ManualClock(at), f"""\
routes:
  - name: jobs
    match: {{path: {{prefix: /jobs/}}}}
    public: true
    rules:
      - name: the-client
        when: {{peer: ["{CLIENT_SPIFFE_ID}"]}}
  - name: reports
    match: {{path: {{prefix: /reports/}}}}
    public: true
    rules:
      - name: by-certificate
        when:
          expression: >-
            peer.id == "{CLIENT_SPIFFE_ID}" && peer.namespace == "demo" && peer.service_account == "client"
            && peer.subject == "CN=extauth dev client,O=extauth development"
            && "{CLIENT_SPIFFE_ID}" in peer.uri_sans && peer.dns_sans == [] && peer.not_after > {int(at)}
  - name: hosts
    match: {{path: {{prefix: /hosts/}}}}
    public: true
    rules:
      - name: by-dns-name
        when: {{expression: '"jobs.local" in peer.dns_sans && peer.id == ""'}}
""")


def test_policies_read_the_certificates_subject_sans_and_validity(certs: DevCerts, tmp_path: Path) -> None:
    """CEL's `peer` holds the SPIFFE ID and its parts plus the forwarded certificate's subject, SANs and dates."""
    forwarded = quote(certs.client_cert.read_text(), safe="")
    start = peer_certificate(forwarded).not_before  # type: ignore[union-attr]
    engine = _certificate_engine(tmp_path, start + 60)
    assert decide(engine, None, "/reports/1", peer=CLIENT_SPIFFE_ID, peer_certificate=forwarded).allowed
    assert not decide(engine, None, "/reports/1", peer=CLIENT_SPIFFE_ID).allowed  # no certificate forwarded
    assert not decide(engine, None, "/reports/1").allowed


def test_a_certificate_with_only_dns_names_is_readable_but_no_spiffe_id(certs: DevCerts, tmp_path: Path) -> None:
    """Envoy reports the subject as the principal; policy can still read the certificate's DNS SANs."""
    issue_client_certificate(certs, tmp_path / "h.crt", tmp_path / "h.key", "host", [x509.DNSName("jobs.local")])
    forwarded = quote((tmp_path / "h.crt").read_text(), safe="")
    engine = _certificate_engine(tmp_path, peer_certificate(forwarded).not_before + 60)  # type: ignore[union-attr]
    principal = "CN=host,O=extauth development"
    assert decide(engine, None, "/hosts/1", peer=principal, peer_certificate=forwarded).allowed
    assert not decide(engine, None, "/jobs/1", peer=principal, peer_certificate=forwarded).allowed


def test_a_certificate_that_has_expired_since_the_handshake_is_no_peer(certs: DevCerts, tmp_path: Path) -> None:
    """A long-lived connection outlives its certificate: from then on, `peer:` and CEL's `peer` see nobody."""
    forwarded = quote(certs.client_cert.read_text(), safe="")
    end = peer_certificate(forwarded).not_after  # type: ignore[union-attr]
    engine = _certificate_engine(tmp_path, end + 1)
    assert not decide(engine, None, "/jobs/1", peer=CLIENT_SPIFFE_ID, peer_certificate=forwarded).allowed
    assert decide(_certificate_engine(tmp_path, end - 1), None, "/jobs/1", peer=CLIENT_SPIFFE_ID,
                  peer_certificate=forwarded).allowed
