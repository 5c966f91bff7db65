"""Hostile or broken files never crash the loaders: every failure is a ConfigError naming the file."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.config import ConfigError, load_config
from extauth.policy.loader import load_policies

YAML_FRAGMENTS = st.sampled_from([
    "policy:", " path: p.yaml", "server:", "  workers: ", "  listen: [", "]", "{", "}", "- ", ": ", "&a ", "*a",
    "!!python/object:os.system", "apiVersion: extauth/v1", "kind: Policy", "routes:", "  - name: r", "\t", "\x00",
    "'", '"', "?", "---", "...", "%YAML 1.1", "0x1F", "~", "1e999", "- {name: x, public: true}", "<<: *a", "\ufeff",
])
DOCUMENTS = st.lists(st.one_of(YAML_FRAGMENTS, st.text(max_size=20)), max_size=30).map("\n".join)


@pytest.mark.parametrize("load", [load_config, load_policies], ids=["config", "policy"])
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=DOCUMENTS)
def test_any_text_loads_or_fails_with_a_config_error_naming_the_file(tmp_path: Path, load, text: str) -> None:
    """Whatever the file holds, the loader returns a result or raises ConfigError whose issues name the file."""
    path = tmp_path / "extauth.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load(path)
    except ConfigError as error:
        assert error.issues and all(issue.file == path for issue in error.issues)
