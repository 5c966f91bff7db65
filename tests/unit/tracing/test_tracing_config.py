"""The `tracing:` section: typed, validated with file:line errors, and a clear fix when the extra is missing."""

import subprocess
import sys
from pathlib import Path

import pytest

from extauth.config import ConfigError, load_config


def config_file(tmp_path: Path, tracing: str) -> Path:
    (tmp_path / "p.yaml").touch()
    path = tmp_path / "extauth.yaml"
    path.write_text("policy: {path: p.yaml}\ntracing:\n" + tracing)
    return path


def test_a_tracing_section_is_read_with_its_defaults(tmp_path: Path) -> None:
    """Only the endpoint is required; 1% of Checks without a parent are sampled, as `extauth`."""
    tracing = load_config(config_file(tmp_path, "  endpoint: http://otel-collector:4317\n")).tracing
    assert tracing is not None
    assert (tracing.endpoint, tracing.sampling_ratio, tracing.service_name) == (
        "http://otel-collector:4317", 0.01, "extauth")


def test_tracing_is_off_without_the_section(tmp_path: Path) -> None:
    """No `tracing:` section, no tracer."""
    (tmp_path / "p.yaml").touch()
    (tmp_path / "extauth.yaml").write_text("policy: {path: p.yaml}\n")
    assert load_config(tmp_path / "extauth.yaml").tracing is None


@pytest.mark.parametrize("endpoint", [
    "otel-collector:4317", "grpc://otel-collector:4317", "http://", "http://user:secret@collector:4317",
    "http://collector:4317/v1/traces", "https://collector:4317?token=x", "file:///tmp/spans",
])
def test_an_endpoint_that_is_no_collector_url_is_refused_with_its_line(tmp_path: Path, endpoint: str) -> None:
    """The endpoint must be http(s)://host:port: no other scheme, no user info, path or query."""
    with pytest.raises(ConfigError) as error:
        load_config(config_file(tmp_path, f"  endpoint: '{endpoint}'\n"))
    assert "3: tracing.endpoint:" in str(error.value)
    assert "secret" not in str(error.value)


def test_a_sampling_ratio_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    """`sampling_ratio` is a fraction."""
    with pytest.raises(ConfigError, match=r"4: tracing\.sampling_ratio"):
        load_config(config_file(tmp_path, "  endpoint: http://c:4317\n  sampling_ratio: 1.5\n"))


def test_tracing_without_the_extra_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    """With the OpenTelemetry packages absent, the config is refused and the message says what to install."""
    path = config_file(tmp_path, "  endpoint: http://otel-collector:4317\n")
    code = ("import sys; sys.modules['opentelemetry'] = None  # as if not installed: importing it fails\n"
            "from extauth.config import ConfigError, load_config\n"
            f"try: load_config({str(path)!r})\n"
            "except ConfigError as error: print(error)\n")
    message = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "extauth.yaml:3: tracing: needs the OpenTelemetry packages" in message
    assert "pip install 'extauth[otel]'" in message


def test_serving_without_tracing_never_imports_opentelemetry() -> None:
    """The Check path imports the OpenTelemetry packages only when tracing is configured."""
    code = ("import sys, extauth.server, extauth.pipeline, extauth.cli; "
            "sys.exit(any(name.startswith('opentelemetry') for name in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
