"""Hostile or broken files never crash the loaders: every failure is a ConfigError naming the file."""

from pathlib import Path

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


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=DOCUMENTS)
def test_any_config_text_loads_or_fails_with_a_config_error(tmp_path: Path, text: str) -> None:
    """Whatever the file holds, load_config returns a Config or raises ConfigError whose issues name the file."""
    path = tmp_path / "extauth.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as error:
        assert error.issues and all(issue.file == path for issue in error.issues)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=DOCUMENTS)
def test_any_policy_text_loads_or_fails_with_a_config_error(tmp_path: Path, text: str) -> None:
    """Whatever a policy file holds, the loader returns a policy set or raises ConfigError naming that file."""
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_policies(path)
    except ConfigError as error:
        assert error.issues and all(issue.file == path for issue in error.issues)
