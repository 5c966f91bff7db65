"""Secret-valued config fields (`rate_limit.backend` today): inline, `*_file` or `*_env`, one of them only, read
at load; every error names file, line, field and the path or variable, never the value."""

import os
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauth.config import ConfigError, load_config, read_config
from extauth.config.schema import url_carries_credentials

PASSWORD_MARK = "S3cr"
#: What a password may hold; percent-encoding (below) makes any of them fit in a URL.
passwords = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=24).map(
    lambda text: PASSWORD_MARK + text)
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z][a-z0-9-]{0,8}){0,2}", fullmatch=True)
ports = st.integers(1, 65535)
schemes = st.sampled_from(["redis", "rediss", "redis+cluster", "rediss+cluster"])


@st.composite
def redis_urls(draw: st.DrawFn, password: str | None) -> str:
    """A limit-store URL of any scheme and host count, with the password (when given) in one of its spellings."""
    scheme = draw(schemes)
    count = draw(st.integers(2, 4)) if scheme.endswith("cluster") else 1
    authority = ",".join(f"{draw(hosts)}:{draw(ports)}" for _ in range(count))
    path = draw(st.sampled_from(["", "/0", f"/{draw(st.integers(0, 15))}"]))
    if password is None:
        user = draw(st.sampled_from(["", "?db=0", "?socket_timeout=1"]))
        return f"{scheme}://{authority}{path}{user}"
    encoded = quote(password, safe="")
    spelling = draw(st.sampled_from(["colon", "user", "query", "raw"]))
    if spelling == "query":
        return f"{scheme}://{authority}{path}?{draw(st.sampled_from(['password', 'PASSWORD', 'pass%77ord']))}={encoded}"
    if spelling == "raw":  # not encoded: `@`, `/`, `:` in a password as people paste them
        return f"{scheme}://:{password}@{authority}{path}"
    user = draw(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)) if spelling == "user" else ""
    return f"{scheme}://{user}:{encoded}@{authority}{path}"


def write_config(tmp_path: Path, rate_limit: str) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "p.yaml").write_text(
        "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\nroutes:\n  - {name: r, public: true}\n")
    config = tmp_path / "extauth.yaml"
    config.write_text(f"policy:\n  path: policies/\nrate_limit:\n{rate_limit}")
    return config


def load_error(config: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    return str(raised.value)


@settings(max_examples=40, deadline=None)
@given(url=st.data(), password=passwords, ending=st.sampled_from(["", "\n", "\r\n", "\n\n"]))
def test_backend_file_is_read_at_load_without_its_trailing_newline(tmp_path_factory: pytest.TempPathFactory,
                                                                   url: st.DataObject, password: str,
                                                                   ending: str) -> None:
    """The file named by backend_file (relative to the config) becomes rate_limit.backend, minus the newline."""
    tmp_path = tmp_path_factory.mktemp("file")
    value = url.draw(redis_urls(password))
    (tmp_path / "redis-url").write_bytes((value + ending).encode())
    config = write_config(tmp_path, "  backend_file: redis-url\n")
    limits = load_config(config).rate_limit
    assert limits.backend == value
    assert limits.backend_file == tmp_path / "redis-url"
    assert value not in repr(limits)


def test_a_secret_volume_of_symlinks_is_read_through_them(tmp_path: Path) -> None:
    """The kubelet mounts a Secret as `url -> ..data/url`, `..data -> ..TIMESTAMP/`: the file is read through them."""
    (tmp_path / "secret" / "..2026_11_28_12_00_00.1").mkdir(parents=True)
    (tmp_path / "secret" / "..2026_11_28_12_00_00.1" / "url").write_text("rediss://:S3cret@r:6380/0\n")
    (tmp_path / "secret" / "..data").symlink_to("..2026_11_28_12_00_00.1")
    (tmp_path / "secret" / "url").symlink_to("..data/url")
    config = write_config(tmp_path, "  backend_file: secret/url\n")
    assert load_config(config).rate_limit.backend == "rediss://:S3cret@r:6380/0"


def test_backend_env_is_read_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable named by backend_env becomes rate_limit.backend, taken as it is."""
    monkeypatch.setenv("EXTAUTH_TEST_REDIS_URL", "rediss://:S3cret@redis.internal:6380/0")
    config = write_config(tmp_path, "  backend_env: EXTAUTH_TEST_REDIS_URL\n")
    assert load_config(config).rate_limit.backend == "rediss://:S3cret@redis.internal:6380/0"


def test_inline_backend_is_kept_and_the_default_is_memory(tmp_path: Path) -> None:
    """An inline URL is used as written; without any of the three the store is in-process."""
    assert load_config(write_config(tmp_path, "  backend: redis://r:6379/0\n")).rate_limit.backend == \
        "redis://r:6379/0"
    assert load_config(write_config(tmp_path, "  timeout_ms: 20\n")).rate_limit.backend == "memory://"


@pytest.mark.parametrize("fields", [
    "  backend: redis://r:6379/0\n  backend_file: url\n",
    "  backend: redis://r:6379/0\n  backend_env: URL\n",
    "  backend_file: url\n  backend_env: URL\n",
    "  backend: redis://r:6379/0\n  backend_file: url\n  backend_env: URL\n",
])
def test_two_sources_of_one_secret_are_an_error_at_the_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              fields: str) -> None:
    """Naming a secret twice is refused at file:line of the later field, whichever two are given."""
    monkeypatch.setenv("URL", "redis://r:6379/1")
    (tmp_path / "url").write_text("redis://r:6379/2\n")
    error = load_error(write_config(tmp_path, fields))
    last = fields.strip().splitlines()[-1].split(":")[0].strip()
    line = 3 + len(fields.strip().splitlines())
    assert f"extauth.yaml:{line}: rate_limit.{last}: set only one of backend, backend_file, backend_env" in error


def test_missing_file_names_the_field_and_the_path(tmp_path: Path) -> None:
    """A backend_file that does not exist is reported at its line with the resolved path."""
    error = load_error(write_config(tmp_path, "  timeout_ms: 20\n  backend_file: secrets/redis-url\n"))
    assert error == (f"{tmp_path / 'extauth.yaml'}:5: rate_limit.backend_file: cannot read "
                     f"{tmp_path / 'secrets' / 'redis-url'}: No such file or directory")


@pytest.mark.parametrize(("content", "problem"), [
    (b"\n", "is empty"), (b"", "is empty"), (b"\xffS3cret\xfe", "does not hold UTF-8 text")])
def test_an_unusable_file_names_the_path(tmp_path: Path, content: bytes, problem: str) -> None:
    """An empty or non-UTF-8 secret file is an error naming the file, without its bytes."""
    (tmp_path / "redis-url").write_bytes(content)
    error = load_error(write_config(tmp_path, "  backend_file: redis-url\n"))
    assert error == f"{tmp_path / 'extauth.yaml'}:4: rate_limit.backend_file: {tmp_path / 'redis-url'} {problem}"


@pytest.mark.parametrize("path", ["/dev/zero", "."])
def test_a_device_or_directory_is_refused_unread(tmp_path: Path, path: str) -> None:
    """backend_file reads only a regular file, so `/dev/zero` or a directory cannot hang or exhaust the load."""
    error = load_error(write_config(tmp_path, f"  backend_file: {path}\n"))
    assert "4: rate_limit.backend_file: cannot read" in error and "not a regular file" in error


@pytest.mark.parametrize(("name", "problem"), [
    ("EXTAUTH_TEST_UNSET", "environment variable EXTAUTH_TEST_UNSET is not set"),
    ("EXTAUTH_TEST_EMPTY", "environment variable EXTAUTH_TEST_EMPTY is empty"),
    ("1BAD", "'1BAD' is not an environment variable name (letters, digits, '_'; not a digit first)"),
])
def test_unusable_variable_names_the_field_and_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            name: str, problem: str) -> None:
    """An unset, empty or malformed backend_env is reported at its line with the variable's name."""
    monkeypatch.delenv("EXTAUTH_TEST_UNSET", raising=False)
    monkeypatch.setenv("EXTAUTH_TEST_EMPTY", "")
    error = load_error(write_config(tmp_path, f"  backend_env: {name}\n"))
    assert error == f"{tmp_path / 'extauth.yaml'}:4: rate_limit.backend_env: {problem}"


@settings(max_examples=60, deadline=None)
@given(password=passwords, source=st.sampled_from(["inline", "file", "env"]),
       scheme=st.sampled_from(["http", "https", "redis:", "memcached", "", "S3cr"]))
def test_a_refused_value_is_never_echoed(tmp_path_factory: pytest.TempPathFactory, password: str, source: str,
                                         scheme: str) -> None:
    """A URL that is no limit store is reported with its field and source, whatever holds the password."""
    tmp_path = tmp_path_factory.mktemp("refused")
    value = f"{scheme}://:{quote(password, safe='')}@h:6379" if scheme else password
    (tmp_path / "url").write_text(value)
    field = {"inline": f"  backend: '{value.replace(chr(39), chr(39) * 2)}'\n", "file": "  backend_file: url\n",
             "env": "  backend_env: EXTAUTH_TEST_REFUSED\n"}[source]
    os.environ["EXTAUTH_TEST_REFUSED"] = value
    try:
        error = load_error(write_config(tmp_path, field))
    finally:
        del os.environ["EXTAUTH_TEST_REFUSED"]
    assert "is not a limit-store URL" in error
    assert PASSWORD_MARK not in error and quote(password, safe="") not in error


@settings(max_examples=200)
@given(data=st.data(), password=passwords)
def test_every_spelling_of_a_credentialed_url_carries_credentials(data: st.DataObject, password: str) -> None:
    """User info with a password, percent-encoded or raw, with a user name or not, on one host or a cluster's
    several, or a `password` query parameter in any case: all are credentials."""
    assert url_carries_credentials(data.draw(redis_urls(password)))


@settings(max_examples=200)
@given(data=st.data())
def test_urls_without_credentials_carry_none(data: st.DataObject) -> None:
    """A URL naming only hosts, a database and harmless parameters holds no secret."""
    url = data.draw(redis_urls(None))
    assert not url_carries_credentials(url)
    assert not url_carries_credentials("memory://") and not url_carries_credentials("unix:///run/redis.sock")


def test_inline_secrets_lists_only_credentials_written_in_the_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An inline password is found at its line; the same URL from a file or a variable, or a URL without one, is
    not."""
    assert [str(issue) for issue in read_config(write_config(
        tmp_path, "  timeout_ms: 20\n  backend: redis://:S3cret@r:6379/0\n")).inline_secrets()] == [
        f"{tmp_path / 'extauth.yaml'}:5: rate_limit.backend: a secret written inline; put it in a mounted file "
        "named by rate_limit.backend_file or in an environment variable named by rate_limit.backend_env "
        "(docs/deployment.md#secrets)"]
    (tmp_path / "url").write_text("redis://:S3cret@r:6379/0\n")
    monkeypatch.setenv("URL", "redis://:S3cret@r:6379/0")
    for field in ("  backend_file: url\n", "  backend_env: URL\n", "  backend: redis://r:6379/0\n"):
        assert read_config(write_config(tmp_path, field)).inline_secrets() == []
