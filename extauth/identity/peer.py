"""The calling workload as its mutual-TLS certificate proves it: a SPIFFE ID (`spiffe://<trust domain>/<path>`).

Only what Envoy verified is read: `attributes.source.principal`, the URI SAN of a client certificate that passed
the listener's CA validation; never a header, which any caller can write. A mesh that asserts a workload's
namespace and service account (Istio, Linkerd, SPIRE on Kubernetes) does so in exactly this form,
`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, so `namespace` and `service_account` are read from
the verified ID, never from anything else the mesh or the client sends.

SPIFFE IDs are compared exactly, so only their one canonical spelling is an identity (`documents.syntax.spiffe_id`);
anything else is no identity at all, so `spiffe://corp/ns/shop/../admin` or `spiffe://CORP/ns/admin` can never
match a rule written for `spiffe://corp/ns/admin` nor fall under a `spiffe://corp/ns/shop/*` prefix.

At the ingress listener (docs/client-certificates.md) Envoy also forwards the verified certificate itself
(`source.certificate`, `include_peer_certificate`): its subject, SANs and validity become attributes of the peer,
and a certificate that names more than its one SPIFFE ID, or that has expired since the connection was made, is no
identity either. `x-forwarded-client-cert` and every other header are never read: a client can send any of them.
"""

from dataclasses import dataclass
from urllib.parse import unquote

from cryptography import x509

from extauth.documents.syntax import spiffe_id
from extauth.request import Request

#: Distinct peers a gateway sees are few (one per workload certificate), so parsed answers are remembered in
#: bounded tables, cleared when full: a Check then costs a dictionary look-up, not a parse.
_MEMO_MAX = 1024
_KNOWN_PEERS: dict[str, "PeerIdentity | None"] = {}
#: A forwarded certificate → what it reads as, and the peer it proves (its one URI SAN, a canonical SPIFFE ID).
_KNOWN_CERTIFICATES: dict[str, tuple["PeerCertificate | None", "PeerIdentity | None"]] = {}


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What policies may read of the verified client certificate (Envoy checked its chain and dates)."""

    #: RFC 4514 form, most specific first (`CN=extauth dev client,O=extauth development`).
    subject: str
    uri_sans: tuple[str, ...]
    dns_sans: tuple[str, ...]
    #: Seconds since the epoch.
    not_before: float
    not_after: float


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A verified workload identity: its SPIFFE ID and the parts policies and limit keys read."""

    spiffe_id: str
    trust_domain: str
    #: The path segments after the trust domain (`("ns", "shop", "sa", "checkout")`).
    segments: tuple[str, ...]
    #: The certificate the ID came from, when Envoy forwards it (`include_peer_certificate`).
    certificate: PeerCertificate | None = None

    @property
    def namespace(self) -> str | None:
        """The Kubernetes namespace of a `/ns/<namespace>/sa/<service account>` ID (the form meshes issue)."""
        return self.segments[1] if self._kubernetes else None

    @property
    def service_account(self) -> str | None:
        return self.segments[3] if self._kubernetes else None

    @property
    def _kubernetes(self) -> bool:
        return len(self.segments) == 4 and self.segments[0] == "ns" and self.segments[2] == "sa"

    def under(self, prefix: "PeerIdentity") -> bool:
        """Whether this ID lies below `prefix` (same trust domain, whole leading segments): the meaning of a
        policy's `spiffe://corp/ns/shop/*`. A prefix never covers itself, and `ns/shop` never covers `ns/shopx`."""
        count = len(prefix.segments)
        return (self.trust_domain == prefix.trust_domain and len(self.segments) > count
                and self.segments[:count] == prefix.segments)


def parse_peer(text: str) -> PeerIdentity | None:
    """The identity `text` names when it is a canonical SPIFFE ID, else None."""
    parsed = spiffe_id(text)
    return None if parsed is None else PeerIdentity(text, *parsed)


def verified_peer(source_principal: str) -> PeerIdentity | None:
    """The caller's identity from Envoy's `source.principal` (the verified certificate's URI SAN, else its
    subject): None without a client certificate, or when the certificate names no canonical SPIFFE ID."""
    if not source_principal:
        return None
    known = _KNOWN_PEERS.get(source_principal, False)
    if known is not False:
        return known  # type: ignore[return-value]
    if len(_KNOWN_PEERS) >= _MEMO_MAX:
        _KNOWN_PEERS.clear()
    peer = _KNOWN_PEERS[source_principal] = parse_peer(source_principal)
    return peer


def certified_peer(source_principal: str, source_certificate: str, now: float) -> PeerIdentity | None:
    """`verified_peer`, with the certificate's attributes when Envoy forwarded it; None when that certificate is
    not valid at `now` (a long-lived connection outlives it) or does not carry exactly this one URI SAN (an X.509
    SVID has one: which of several Envoy reports is not a choice to build policy on)."""
    if not source_certificate:
        return verified_peer(source_principal)
    certificate, peer = _certificate_entry(source_certificate)
    if peer is None or peer.spiffe_id != source_principal or not _valid(certificate, now):  # type: ignore[arg-type]
        return None
    return peer


def peer_of(request: Request, now: float) -> PeerIdentity | None:
    """The verified peer of an ingress request (`certified_peer` of what Envoy reported)."""
    return certified_peer(request.peer_principal, request.peer_certificate, now)


def valid_certificate(source_certificate: str, now: float) -> PeerCertificate | None:
    """The forwarded client certificate when it is valid at `now`, whether or not it names a SPIFFE ID (a
    certificate with only DNS SANs still has a subject and names policies may read)."""
    certificate = _certificate_entry(source_certificate)[0] if source_certificate else None
    return certificate if certificate is not None and _valid(certificate, now) else None


def peer_certificate(source_certificate: str) -> PeerCertificate | None:
    """Envoy's `source.certificate` (a URL-encoded PEM) read; None when it is not one certificate."""
    return _certificate_entry(source_certificate)[0]


def _valid(certificate: PeerCertificate, now: float) -> bool:
    return certificate.not_before <= now <= certificate.not_after


def _certificate_entry(source_certificate: str) -> tuple[PeerCertificate | None, PeerIdentity | None]:
    known = _KNOWN_CERTIFICATES.get(source_certificate)
    if known is not None:
        return known
    if len(_KNOWN_CERTIFICATES) >= _MEMO_MAX:
        _KNOWN_CERTIFICATES.clear()
    certificate = _read_certificate(source_certificate)
    proven = parse_peer(certificate.uri_sans[0]) if certificate is not None and len(certificate.uri_sans) == 1 else None
    entry = _KNOWN_CERTIFICATES[source_certificate] = (
        certificate, None if proven is None else PeerIdentity(proven.spiffe_id, proven.trust_domain, proven.segments,
                                                               certificate))
    return entry


def _read_certificate(source_certificate: str) -> PeerCertificate | None:
    try:
        certificate = x509.load_pem_x509_certificate(unquote(source_certificate).encode())
        subject = certificate.subject.rfc4514_string()
        extensions = certificate.extensions
    except ValueError:
        return None
    uri_sans: list[str] = []
    dns_sans: list[str] = []
    for extension in extensions:
        if isinstance(extension.value, x509.SubjectAlternativeName):
            uri_sans = extension.value.get_values_for_type(x509.UniformResourceIdentifier)
            dns_sans = extension.value.get_values_for_type(x509.DNSName)
    return PeerCertificate(subject, tuple(uri_sans), tuple(dns_sans), certificate.not_valid_before_utc.timestamp(),
                           certificate.not_valid_after_utc.timestamp())
