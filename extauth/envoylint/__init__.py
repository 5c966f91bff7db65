"""`extauth envoy-lint`: the security misconfigurations of an Envoy bootstrap that `envoy --mode validate` accepts.

Off the hot path: nothing here is imported by `serve` or the Check pipeline (it needs the `envoy-lint` extra,
envoy-data-plane's typed models of the Envoy API). docs/envoy-lint.md lists the rules and the waiver syntax.
"""
