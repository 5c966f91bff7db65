from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyVersion(_message.Message):
    __slots__ = ("version", "source")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    version: str
    source: str
    def __init__(self, version: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class ReloadResult(_message.Message):
    __slots__ = ("ok", "trigger", "at", "errors", "version", "reloads", "failures")
    OK_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RELOADS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    trigger: str
    at: str
    errors: _containers.RepeatedScalarFieldContainer[str]
    version: str
    reloads: int
    failures: int
    def __init__(self, ok: _Optional[bool] = ..., trigger: _Optional[str] = ..., at: _Optional[str] = ..., errors: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., reloads: _Optional[int] = ..., failures: _Optional[int] = ...) -> None: ...

class IdentityProvider(_message.Message):
    __slots__ = ("name", "issuer", "keys", "ready", "keys_age_seconds", "refreshes", "refresh_failures", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    KEYS_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REFRESHES_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    issuer: str
    keys: int
    ready: bool
    keys_age_seconds: float
    refreshes: int
    refresh_failures: int
    source: str
    def __init__(self, name: _Optional[str] = ..., issuer: _Optional[str] = ..., keys: _Optional[int] = ..., ready: _Optional[bool] = ..., keys_age_seconds: _Optional[float] = ..., refreshes: _Optional[int] = ..., refresh_failures: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class RateLimitBackend(_message.Message):
    __slots__ = ("kind", "breaker", "consecutive_failures", "backend_calls", "backend_errors", "short_circuited", "last_error")
    KIND_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_CALLS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_ERRORS_FIELD_NUMBER: _ClassVar[int]
    SHORT_CIRCUITED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    kind: str
    breaker: str
    consecutive_failures: int
    backend_calls: int
    backend_errors: int
    short_circuited: int
    last_error: str
    def __init__(self, kind: _Optional[str] = ..., breaker: _Optional[str] = ..., consecutive_failures: _Optional[int] = ..., backend_calls: _Optional[int] = ..., backend_errors: _Optional[int] = ..., short_circuited: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class AuditWriterStatus(_message.Message):
    __slots__ = ("queue_depth", "queue_size", "dropped", "written", "sampled_out", "tail_subscribers")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_OUT_FIELD_NUMBER: _ClassVar[int]
    TAIL_SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    queue_depth: int
    queue_size: int
    dropped: _containers.ScalarMap[str, int]
    written: int
    sampled_out: int
    tail_subscribers: int
    def __init__(self, queue_depth: _Optional[int] = ..., queue_size: _Optional[int] = ..., dropped: _Optional[_Mapping[str, int]] = ..., written: _Optional[int] = ..., sampled_out: _Optional[int] = ..., tail_subscribers: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("instance", "pid", "start_time", "policy", "shadow_policy", "last_reload", "identity_providers", "rate_limit", "audit", "ready")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_POLICY_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    instance: str
    pid: int
    start_time: str
    policy: PolicyVersion
    shadow_policy: PolicyVersion
    last_reload: ReloadResult
    identity_providers: _containers.RepeatedCompositeFieldContainer[IdentityProvider]
    rate_limit: RateLimitBackend
    audit: AuditWriterStatus
    ready: bool
    def __init__(self, instance: _Optional[str] = ..., pid: _Optional[int] = ..., start_time: _Optional[str] = ..., policy: _Optional[_Union[PolicyVersion, _Mapping]] = ..., shadow_policy: _Optional[_Union[PolicyVersion, _Mapping]] = ..., last_reload: _Optional[_Union[ReloadResult, _Mapping]] = ..., identity_providers: _Optional[_Iterable[_Union[IdentityProvider, _Mapping]]] = ..., rate_limit: _Optional[_Union[RateLimitBackend, _Mapping]] = ..., audit: _Optional[_Union[AuditWriterStatus, _Mapping]] = ..., ready: _Optional[bool] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("method", "url", "headers", "source_address", "peer", "context_extensions", "subject", "claims_json", "shadow")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ContextExtensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_JSON_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    method: str
    url: str
    headers: _containers.ScalarMap[str, str]
    source_address: str
    peer: str
    context_extensions: _containers.ScalarMap[str, str]
    subject: str
    claims_json: str
    shadow: bool
    def __init__(self, method: _Optional[str] = ..., url: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., source_address: _Optional[str] = ..., peer: _Optional[str] = ..., context_extensions: _Optional[_Mapping[str, str]] = ..., subject: _Optional[str] = ..., claims_json: _Optional[str] = ..., shadow: _Optional[bool] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("lines", "allowed", "policy_version")
    LINES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    allowed: bool
    policy_version: str
    def __init__(self, lines: _Optional[_Iterable[str]] = ..., allowed: _Optional[bool] = ..., policy_version: _Optional[str] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: ReloadResult
    def __init__(self, result: _Optional[_Union[ReloadResult, _Mapping]] = ...) -> None: ...

class TailAuditRequest(_message.Message):
    __slots__ = ("events", "decision", "reasons", "subject", "route")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedScalarFieldContainer[str]
    decision: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    subject: str
    route: str
    def __init__(self, events: _Optional[_Iterable[str]] = ..., decision: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., subject: _Optional[str] = ..., route: _Optional[str] = ...) -> None: ...

class AuditLine(_message.Message):
    __slots__ = ("json", "dropped_before")
    JSON_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    json: str
    dropped_before: int
    def __init__(self, json: _Optional[str] = ..., dropped_before: _Optional[int] = ...) -> None: ...
