"""The local stack (Envoy in front of extauth and the demo upstream), used by `make dev`, tests and the bench."""
