"""extauth: the security control point beside Envoy (ext_authz v3)."""

__version__ = "0.1.0"
