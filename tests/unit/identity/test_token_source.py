"""Token sources: where the token is found, what counts as absent, and that hostile headers never crash."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extauth.config.schema import TokenSourceConfig
from extauth.identity.principal import AuthenticationError
from extauth.identity.token_source import TokenExtractor
from extauth.reasons import Reason

BEARER = TokenSourceConfig(header="authorization", scheme="Bearer")
RAW_HEADER = TokenSourceConfig(header="x-token")
COOKIE = TokenSourceConfig(cookie="session")


def extract(headers: dict[str, str], *sources: TokenSourceConfig, max_bytes: int = 8192) -> str | None:
    return TokenExtractor(sources or (BEARER,), max_bytes).extract(headers)


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer    abc", "abc"),
        ("  Bearer abc  ", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearerabc", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Bearer\tabc", None),
        ("", None),
    ],
)
def test_header_with_scheme(value: str, token: str | None) -> None:
    """The scheme matches case-insensitively and is followed by one or more spaces; anything else is absent."""
    assert extract({"authorization": value}) == token


def test_header_without_scheme_takes_the_whole_value() -> None:
    """A source without a scheme uses the trimmed header value."""
    assert extract({"x-token": " abc "}, RAW_HEADER) == "abc"
    assert extract({"x-token": "   "}, RAW_HEADER) is None


def test_no_credentials_is_none() -> None:
    """A request with none of the configured sources yields None, not an error."""
    assert extract({"accept": "*/*"}, BEARER, COOKIE) is None


def test_first_present_source_wins() -> None:
    """Sources are tried in configured order; a header with another scheme falls through to the next source."""
    headers = {"authorization": "Bearer from-header", "cookie": "session=from-cookie"}
    assert extract(headers, BEARER, COOKIE) == "from-header"
    assert extract(headers, COOKIE, BEARER) == "from-cookie"
    assert extract({**headers, "authorization": "Basic xyz"}, BEARER, COOKIE) == "from-cookie"


@pytest.mark.parametrize(
    ("cookie", "token"),
    [
        ("session=abc", "abc"),
        ("a=1; session=abc; b=2", "abc"),
        ("a=1;session=abc;b=2", "abc"),
        ('session="abc"', "abc"),
        ("xsession=nope; session_id=nope; session=abc", "abc"),
        ("session=first; session=second", "first"),
        ("session", None),
        ("garbage; ;;=; session=abc", "abc"),
        ("session=", None),
        ('session="', '"'),
        ("other=session", None),
        ("a=b=c; session=x=y", "x=y"),
        (";" * 10_000 + "session=abc", "abc"),
    ],
)
def test_cookie_parsing(cookie: str, token: str | None) -> None:
    """The first pair named exactly `session` wins; pairs without '=' and stray separators are skipped."""
    assert extract({"cookie": cookie}, COOKIE) == token


def test_token_too_large() -> None:
    """A token over max_token_bytes (counted in UTF-8 bytes) is refused without quoting it."""
    assert extract({"authorization": "Bearer " + "a" * 256}, max_bytes=256) == "a" * 256
    for token in ("a" * 257, "é" * 129):
        with pytest.raises(AuthenticationError) as caught:
            extract({"authorization": "Bearer " + token}, max_bytes=256)
        assert caught.value.reason == Reason.TOKEN_TOO_LARGE
        assert token not in caught.value.description


@given(
    authorization=st.text(max_size=300),
    cookie=st.text(alphabet=st.sampled_from('session=;" \t,abc\x00é\udc80'), max_size=300) | st.text(max_size=300),
    raw=st.text(max_size=300),
)
def test_hostile_headers_never_raise_anything_but_authentication_error(
    authorization: str, cookie: str, raw: str
) -> None:
    """Arbitrary header and cookie strings either yield a token, None, or an AuthenticationError."""
    headers = {"authorization": authorization, "cookie": cookie, "x-token": raw}
    try:
        token = extract(headers, BEARER, COOKIE, RAW_HEADER, max_bytes=256)
    except AuthenticationError as error:
        assert error.reason == Reason.TOKEN_TOO_LARGE
    else:
        assert token is None or (token and token in authorization + cookie + raw)
