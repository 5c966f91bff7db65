"""The API key store file (docs/apikeys.md): one entry per key, holding its SHA-256 digest, never the key.

Read like every other extauth file (extauth.documents.yamlsource): each problem is reported as file:line: field,
and every one at once. An empty file is an empty store, so a deployment can mount one before any key exists.
`render_key_store` is what `extauth apikey` writes back.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, AwareDatetime, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from extauth.documents.errors import ConfigError, ConfigIssue, sorted_issues
from extauth.documents.fields import Name, Strict
from extauth.documents.yamlsource import dotted, line_for, parse_documents, read_text, validate

#: Claims every API-key principal gets from its entry's `client` and the store; an entry may not set them.
RESERVED_CLAIMS = ("sub", "iss", "client_id")
HEADER_COMMENT = "# extauth API key store (docs/apikeys.md): SHA-256 digests only; edit with `extauth apikey`.\n"


def _claim_name(value: str) -> str:
    if value in RESERVED_CLAIMS:
        raise ValueError(f"{value!r} is set from the entry's client; it cannot be a claim of its own")
    return value


ClaimName = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_claim_name)]
ClaimValue = StrictStr | StrictBool | StrictInt | StrictFloat | list[StrictStr]
KeyId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ApiKeyEntry(Strict):
    #: Names the key in audit events and `extauth apikey revoke --id`; not secret.
    id: KeyId
    #: The principal's subject (`sub`, `client_id`); its identity is `<api_keys.name>:<client>`.
    client: Name
    sha256: Sha256Hex
    #: Claims for policy conditions and forwarded claim headers; `roles` and `groups` are trusted as the
    #: principal's roles and groups (the store is written by operators, not by callers).
    claims: dict[ClaimName, ClaimValue] = Field(default_factory=dict)
    created: AwareDatetime
    expires: AwareDatetime | None = None
    #: When the key was revoked; a revoked key is refused from the reload that reads this on.
    revoked: AwareDatetime | None = None


class ApiKeyStoreDocument(Strict):
    keys: list[ApiKeyEntry] = Field(default_factory=list)


def read_key_store(path: Path) -> ApiKeyStoreDocument:
    """The store in `path`; ConfigError naming file:line: field for every problem (duplicate ids and digests
    included)."""
    documents = parse_documents(path, read_text(path))
    if not documents:
        return ApiKeyStoreDocument()
    if len(documents) > 1:
        raise ConfigError.single(path, f"expected one YAML document, found {len(documents)}")
    data, lines = documents[0]
    store = validate(ApiKeyStoreDocument, data, lines, path)
    issues = []
    for attribute in ("id", "sha256"):
        first: dict[str, int] = {}
        for index, entry in enumerate(store.keys):
            value = getattr(entry, attribute)
            earlier = first.setdefault(value, index)
            if earlier != index:
                at = ("keys", index, attribute)
                issues.append(ConfigIssue(path, line_for(lines, at), dotted(at),
                                          f"the same {attribute} as keys[{earlier}]"))
    if issues:
        raise ConfigError(sorted_issues(issues))
    return store


def render_key_store(store: ApiKeyStoreDocument) -> str:
    """The store as YAML, one entry per key, timestamps in UTC to the second."""
    entries = [{name: _plain(value) for name, value in entry.model_dump().items() if value is not None and
                value != {}} for entry in store.keys]
    return HEADER_COMMENT + yaml.safe_dump({"keys": entries}, sort_keys=False, allow_unicode=True)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value
