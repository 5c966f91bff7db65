"""Local development helpers: dev certificates, dev tokens and the demo upstream (never used in production)."""

DEV_ISSUER = "https://extauth.local/dev"
DEV_AUDIENCE = "extauth-demo"
DEV_KEY_ID = "dev-1"
#: Where `extauth token` finds its signing key when --key is not given (before the checkout's .run/certs).
DEV_KEY_VARIABLE = "EXTAUTH_DEV_KEY"
