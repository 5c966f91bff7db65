"""The screening document schema (`apiVersion: extauth/v1`, `kind: Screening`), documented in docs/screening.md.

It lives in the policy directory, so it is versioned, validated and hot-reloaded with the policies.
Without any Screening document the defaults below apply: screening is on unless switched off.
"""

from typing import Literal

from pydantic import Field, model_validator

from extauth.documents.fields import HeaderName, Name, Strict
from extauth.documents.policy import HttpMethod, Metadata

DEFAULT_METHODS: tuple[HttpMethod, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class Limits(Strict):
    max_uri_bytes: int = Field(8192, ge=64, le=1_048_576)          # path + query; over → 414
    max_query_bytes: int = Field(4096, ge=0, le=1_048_576)         # over → 414
    max_header_bytes: int = Field(8192, ge=64, le=1_048_576)       # one header, name + value; over → 431
    max_headers_bytes: int = Field(32_768, ge=256, le=4_194_304)   # all headers; over → 431
    max_headers: int = Field(100, ge=1, le=10_000)                 # count; over → 431

    @model_validator(mode="after")
    def _reachable(self) -> "Limits":
        """A limit written down but shadowed by the others would read as protection that never applies."""
        written = self.model_fields_set
        if "max_headers_bytes" in written and self.max_headers_bytes > self.max_headers * self.max_header_bytes:
            raise ValueError(f"max_headers_bytes {self.max_headers_bytes} can never be reached: max_headers "
                             f"{self.max_headers} × max_header_bytes {self.max_header_bytes} is smaller")
        if "max_header_bytes" in written and self.max_header_bytes > self.max_headers_bytes:
            raise ValueError(f"max_header_bytes {self.max_header_bytes} can never be reached: max_headers_bytes "
                             f"{self.max_headers_bytes} (all headers together) is smaller")
        return self


class Blocks(Strict):
    path_traversal: bool = True       # `..` segments (raw or percent-encoded) in path or query → 400
    control_characters: bool = True   # NUL and other control characters in path, query or header values → 400
    encoded_slashes: bool = True      # `%2F` / `%5C` in the path → 400
    #: `;params` in any path segment → 400. Switch off only for upstreams that need them (Java servlet
    #: `;jsessionid`); they are then dropped before matching, as those upstreams drop them (docs/security.md).
    path_parameters: bool = True
    #: `X-HTTP-Method-Override` and its kin, or a `_method` query parameter → 400: frameworks serve such a POST as
    #: the method named there, which is not the method the policy decided on.
    method_override: bool = True


SignatureTarget = Literal["path", "query", "headers"]


class Signature(Strict):
    name: Name
    #: Where to look: the path, the raw query string, or header values (all, or only `header`).
    targets: list[SignatureTarget] = Field(min_length=1)
    header: HeaderName | None = None
    #: A Python regular expression (`re.search`); compiled at load, a bad pattern is a load error.
    pattern: str = Field(min_length=1)


class ScreeningDocument(Strict):
    apiVersion: Literal["extauth/v1"]  # noqa: N815 - the file's own key
    kind: Literal["Screening"]
    metadata: Metadata
    #: Allowed methods; others are refused with 405. At most one Screening document may set
    #: `methods`, `limits` or `blocks`; `signatures` from every document apply.
    methods: list[HttpMethod] | None = Field(None, min_length=1)
    limits: Limits | None = None
    blocks: Blocks | None = None
    signatures: list[Signature] = Field(default_factory=list)
