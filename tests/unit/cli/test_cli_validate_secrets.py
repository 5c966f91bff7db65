"""`extauth validate` warns about a secret written inline in the config file: it names file:line:field and the
fix, never prints the secret, and exits 0 unless `--strict`."""

import contextlib
import io
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauth.cli import main

POLICY = "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\nroutes:\n  - {name: r, public: true}\n"
MARK = "S3cr"
passwords = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20).map(
    lambda text: MARK + text)


def validate(tmp_path: Path, rate_limit: str, *options: str) -> tuple[int, str, str]:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    config = tmp_path / "extauth.yaml"
    config.write_text(f"policy:\n  path: policies/\nrate_limit:\n{rate_limit}")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["validate", *options, str(config)])
    return status, out.getvalue(), err.getvalue()


@st.composite
def inline_credentials(draw: st.DrawFn) -> tuple[str, str]:
    """A credentialed URL as YAML would hold it (any scheme, one host or several, any spelling) and its password."""
    password = draw(passwords)
    scheme = draw(st.sampled_from(["redis", "rediss", "redis+cluster", "rediss+cluster", "unix"]))
    hosts = "/run/redis.sock" if scheme == "unix" else ",".join(
        f"h{index}.internal:{6379 + index}" for index in range(draw(st.integers(1, 3))))
    encoded = quote(password, safe="")
    spellings = [f"{scheme}://:{encoded}@{hosts}/0", f"{scheme}://app:{encoded}@{hosts}/0",
                 f"{scheme}://{hosts}?password={encoded}"]
    url = draw(st.sampled_from(spellings)) if scheme != "unix" else f"unix://:{encoded}@{hosts}?db=0"
    return url, password


@settings(max_examples=25, deadline=None)
@given(case=inline_credentials())
def test_an_inline_redis_password_is_a_warning_with_the_fix_and_never_printed(
        tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str]) -> None:
    """Any spelling of a credentialed URL inline: exit 0, one warning at file:line:field naming backend_file and
    backend_env, and neither the password nor its encoding anywhere in the output."""
    url, password = case
    tmp_path = tmp_path_factory.mktemp("inline")
    status, out, err = validate(tmp_path, f"  timeout_ms: 20\n  backend: '{url}'\n")
    assert status == 0, err
    assert err.splitlines() == [
        f"warning: {tmp_path / 'extauth.yaml'}:5: rate_limit.backend: a secret written inline; put it in a mounted "
        "file named by rate_limit.backend_file or in an environment variable named by rate_limit.backend_env "
        "(docs/deployment.md#secrets)"]
    assert MARK not in out + err and quote(password, safe="") not in out + err


def test_strict_turns_the_warning_into_exit_1(tmp_path: Path) -> None:
    """With --strict an inline secret fails validation; the message is the same warning."""
    status, _, err = validate(tmp_path, "  backend: rediss://:S3cret@r:6380/0\n", "--strict")
    assert status == 1
    assert "rate_limit.backend: a secret written inline" in err and "S3cret" not in err


def test_the_same_url_from_a_file_or_variable_validates_without_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """backend_file and backend_env are the fix: no warning, exit 0 even with --strict."""
    (tmp_path / "redis-url").write_text("rediss://:S3cret@r:6380/0\n")
    monkeypatch.setenv("EXTAUTH_REDIS_URL", "rediss://:S3cret@r:6380/0")
    for field in ("  backend_file: redis-url\n", "  backend_env: EXTAUTH_REDIS_URL\n"):
        status, out, err = validate(tmp_path, field, "--strict")
        assert (status, err) == (0, ""), err
        assert "S3cret" not in out


def test_a_missing_secret_file_fails_validation_naming_field_and_path(tmp_path: Path) -> None:
    """An unreadable backend_file is an error (exit 1) at its line, naming the path."""
    status, _, err = validate(tmp_path, "  backend_file: /nonexistent/redis-url\n")
    assert status == 1
    assert err.strip() == (f"{tmp_path / 'extauth.yaml'}:4: rate_limit.backend_file: cannot read "
                           "/nonexistent/redis-url: No such file or directory")
