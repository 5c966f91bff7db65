"""The calling workload as its mutual-TLS certificate proves it: a SPIFFE ID (`spiffe://<trust domain>/<path>`).

Only what Envoy verified is read: `attributes.source.principal`, the URI SAN of a client certificate that passed
the listener's CA validation; never a header, which any caller can write. A mesh that asserts a workload's
namespace and service account (Istio, Linkerd, SPIRE on Kubernetes) does so in exactly this form,
`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, so `namespace` and `service_account` are read from
the verified ID, never from anything else the mesh or the client sends.

SPIFFE IDs are compared exactly, so only their one canonical spelling is an identity (`documents.syntax.spiffe_id`);
anything else is no identity at all, so `spiffe://corp/ns/shop/../admin` or `spiffe://CORP/ns/admin` can never
match a rule written for `spiffe://corp/ns/admin` nor fall under a `spiffe://corp/ns/shop/*` prefix.

Ingress client certificates (the identities issue) extend this type: the same verified peer, read the same way.
"""

from dataclasses import dataclass

from extauth.documents.syntax import spiffe_id


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A verified workload identity: its SPIFFE ID and the parts policies and limit keys read."""

    spiffe_id: str
    trust_domain: str
    #: The path segments after the trust domain (`("ns", "shop", "sa", "checkout")`).
    segments: tuple[str, ...]

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
    return parse_peer(source_principal) if source_principal else None
