"""Authentication: who is calling (JWT/OIDC now; API keys and mTLS identities sit beside it)."""
