"""µs per call of the client-certificate peer (docs/client-certificates.md), in process, one core.

The CheckRequest is what Envoy sends through the shipped bootstrap for `curl --cert client.crt ... /internal/jobs`:
`source.principal` the SPIFFE ID, `source.certificate` the URL-encoded PEM. A warm figure is what every Check
pays once the certificate has been seen (the parsed peer is remembered); a cold one what the first Check of a new
certificate pays.
"""

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from pipeline_micro import envoy_check_request, microseconds_per_call, repeated

from extauth.authorization.engine import PolicyEngine
from extauth.clock import SystemClock
from extauth.devstack.gateway import DEMO_POLICIES
from extauth.devtools.certs import CLIENT_SPIFFE_ID, create_dev_certs
from extauth.documents.loader import load_policies
from extauth.identity import peer
from extauth.request import Request


def measurements(certs_dir: Path) -> Iterator[tuple[str, float]]:
    certs = create_dev_certs(certs_dir)
    check = envoy_check_request("/internal/jobs", None)
    check.attributes.source.principal = CLIENT_SPIFFE_ID
    check.attributes.source.certificate = quote(certs.client_cert.read_text(), safe="")
    check.attributes.context_extensions["route"] = "internal"
    anonymous = envoy_check_request("/public/x", None)
    engine, clock = PolicyEngine(load_policies(DEMO_POLICIES), SystemClock()), SystemClock()
    request, public = Request(check), Request(anonymous)
    if not engine.authorize(request, None).allowed:
        raise RuntimeError("the demo policy did not admit the demo workload")

    def cold() -> object:
        peer._KNOWN_PEERS.clear()
        peer._KNOWN_CERTIFICATES.clear()
        return peer.peer_of(request, clock.now())

    yield "peer_of, warm (SPIFFE ID + certificate remembered)", microseconds_per_call(
        repeated(lambda: peer.peer_of(request, clock.now())))
    yield "peer_of, cold (parse the ID and the certificate)", microseconds_per_call(repeated(cold))
    yield "peer_of, no client certificate", microseconds_per_call(repeated(lambda: peer.peer_of(public, clock.now())))
    yield "PolicyEngine.authorize /internal/jobs (peer: rule)", microseconds_per_call(
        repeated(lambda: engine.authorize(request, None)))
    yield "PolicyEngine.authorize /public/x (no peer)", microseconds_per_call(
        repeated(lambda: engine.authorize(public, None)))


def main() -> int:
    print(f"| {'piece':<52} | {'µs/call':>8} |\n|{'-' * 54}|{'-' * 10}|")
    with tempfile.TemporaryDirectory(prefix="extauth-peer-") as temp:
        for name, microseconds in measurements(Path(temp)):
            print(f"| {name:<52} | {microseconds:>8.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
