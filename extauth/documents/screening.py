"""The screening document schema (`apiVersion: extauth/v1`, `kind: Screening`), documented in docs/screening.md.

It lives in the policy directory, so it is versioned, validated and hot-reloaded with the policies.
Without any Screening document the defaults below apply: screening is on unless switched off.
"""

from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

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


#: Where Debian's `modsecurity-crs` package puts the OWASP Core Rule Set (docs/waf.md).
DEFAULT_CRS_PATH = "/usr/share/modsecurity-crs"
CRS = "crs"


class InspectBody(Strict):
    #: Bytes of the body ModSecurity reads; Envoy's `with_request_body.max_request_bytes` must be at least this
    #: (a larger body is cut there when `allow_partial_message` is on, refused with 413 when it is off).
    max_bytes: int = Field(8192, ge=1, le=1_048_576)


class WafExclusions(Strict):
    """The CRS way of tuning a false positive: switch a rule off by id, or a whole group by tag."""

    rule_ids: list[int] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @field_validator("rule_ids")
    @classmethod
    def _rule_ids(cls, ids: list[int]) -> list[int]:
        for rule_id in ids:
            if not 1 <= rule_id <= 9_999_999:
                raise ValueError(f"rule id {rule_id} is not a ModSecurity rule id (1 .. 9999999)")
        return ids

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not tag or any(ch in tag for ch in "\"\n\r\\"):
                raise ValueError(f"tag {tag!r} must be non-empty and free of quotes, backslashes and line breaks")
        return tags


WafMode = Literal["block", "detect"]


class WafRoute(Strict):
    """Overrides for requests whose canonical path starts with `path_prefix`, compared case-insensitively as policy
    routes are (the longest prefix wins)."""

    name: Name
    path_prefix: str = Field(pattern=r"^/")
    paranoia_level: int | None = Field(None, ge=1, le=4)
    anomaly_threshold: int | None = Field(None, ge=1, le=1000)
    mode: WafMode | None = None
    #: Added to the policy-wide exclusions.
    exclusions: WafExclusions = Field(default_factory=WafExclusions)
    #: Overrides the policy-wide setting; `null` (the default) keeps it, `false` switches inspection off.
    inspect_body: InspectBody | Literal[False] | None = None
    #: `false`: no WAF for this prefix at all (e.g. an upload endpoint with its own scanning).
    enabled: bool = True


class Waf(Strict):
    """The OWASP Core Rule Set run by ModSecurity v3 (docs/waf.md); needs the `extauth[waf]` extra."""

    engine: Literal["modsecurity"] = "modsecurity"
    #: `crs` is the Core Rule Set under `crs_path` (without REQUEST-910, which needs GeoIP); other entries name
    #: `.conf` files in the policy directory (watched and versioned with it), loaded in this order.
    rules: list[str] = Field(default_factory=lambda: [CRS], min_length=1)
    crs_path: str = DEFAULT_CRS_PATH
    paranoia_level: int = Field(1, ge=1, le=4)
    #: The CRS inbound anomaly score at which a request is blocked (CRS default 5: one critical match).
    anomaly_threshold: int = Field(5, ge=1, le=1000)
    mode: WafMode = "block"
    exclusions: WafExclusions = Field(default_factory=WafExclusions)
    #: Inspect request bodies (JSON, form, XML) up to `max_bytes`; only where Envoy sends them (docs/waf.md).
    inspect_body: InspectBody | Literal[False] = False
    routes: list[WafRoute] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _rules(cls, rules: list[str]) -> list[str]:
        for entry in rules:
            if entry != CRS and (PurePosixPath(entry).suffix != ".conf" or PurePosixPath(entry).name != entry):
                raise ValueError(f"{entry!r} is neither 'crs' nor the name of a .conf file in the policy directory")
        if len(set(rules)) != len(rules):
            raise ValueError("a rule file is listed twice")
        return rules

    @model_validator(mode="after")
    def _unique_prefixes(self) -> "Waf":
        prefixes = [route.path_prefix for route in self.routes]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("two WAF routes have the same path_prefix; merge them")
        names = [route.name for route in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("two WAF routes have the same name")
        return self


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
    #: The OWASP Core Rule Set through ModSecurity; off when absent. At most one Screening document may set it.
    waf: Waf | None = None
