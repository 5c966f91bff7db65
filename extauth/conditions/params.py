"""Route parameters bound by a path template (`{id}`), read by conditions (`param_equals_claim`, CEL `params`)."""

from collections.abc import Mapping
from types import MappingProxyType

Params = Mapping[str, str]
NO_PARAMS: Params = MappingProxyType({})
