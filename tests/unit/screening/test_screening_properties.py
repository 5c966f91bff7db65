"""Property tests: hostile input never makes screening raise, and control characters or `..` never slip through."""

from hypothesis import given, settings
from hypothesis import strategies as st
from support.screening_inline import BROWSER, screen

from extauth.decision import Decision
from extauth.reasons import Reason
from extauth.screening.compiler import compile_screening
from extauth.screening.screener import Screener

DEFAULTS: Screener = compile_screening(())
SCREENING_REASONS = {Reason.METHOD_NOT_ALLOWED, Reason.URI_TOO_LONG, Reason.HEADERS_TOO_LARGE, Reason.PATH_TRAVERSAL,
                     Reason.CONTROL_CHARACTERS, Reason.ENCODED_SLASH, Reason.SIGNATURE_MATCH,
                     Reason.PATH_PARAMETERS, Reason.MALFORMED_PATH, Reason.INVALID_HOST}
CONTROLS = [chr(code) for code in range(0x20)] + ["\x7f"]

#: Anything protobuf accepts in a string field (valid UTF-8, so no lone surrogates), biased towards the
#: characters screening cares about.
hostile = st.text(
    st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from(list("%./\\;?&=2eEfFcC5") + CONTROLS)),
    max_size=300,
)
clean_segment = st.text(st.sampled_from("abcxyz0123456789-_~.ABC"), min_size=1, max_size=12).filter(
    lambda segment: segment not in (".", ".."))
one_dot = st.sampled_from([".", "%2e", "%2E", "%252e", "%252E", "%25252e"])
separator = st.sampled_from(["/", "\\", "%5c", "%5C", "%2f", "%252f"])


def is_screening_block(decision: Decision | None) -> bool:
    return decision is None or (not decision.allowed and decision.reason in SCREENING_REASONS and
                                decision.rule is not None)


@settings(max_examples=400, deadline=None)
@given(path=hostile, query=hostile, value=hostile, method=st.sampled_from(["GET", "POST", "TRACE", "X"]))
def test_hostile_input_never_raises(path: str, query: str, value: str, method: str) -> None:
    """Any path, query, header value and method gives None or a screening deny naming its rule."""
    decision = screen(DEFAULTS, f"/{path}?{query}", method, headers={"x-any": value, "referer": path})
    assert is_screening_block(decision)


@settings(max_examples=300, deadline=None)
@given(before=hostile, after=hostile, control=st.sampled_from(CONTROLS), in_query=st.booleans())
def test_a_raw_control_character_in_path_or_query_is_always_blocked(before: str, after: str, control: str,
                                                                    in_query: bool) -> None:
    """Wherever a C0 control or DEL sits in the path or the query, the request is blocked."""
    url = f"/p?{before}{control}{after}" if in_query else f"/{before}{control}{after}"
    decision = screen(DEFAULTS, url)
    # Path checks come before query checks: an encoded slash or `..` earlier in the URL may be named instead.
    assert decision is not None
    assert decision.reason in (Reason.CONTROL_CHARACTERS, Reason.ENCODED_SLASH, Reason.PATH_TRAVERSAL)
    if "%" not in url and ".." not in url:
        assert decision.reason == Reason.CONTROL_CHARACTERS


@settings(max_examples=300, deadline=None)
@given(before=hostile, after=hostile, control=st.sampled_from([c for c in CONTROLS if c != "\t"]))
def test_a_control_character_in_a_header_value_is_always_blocked(before: str, after: str, control: str) -> None:
    """Any header value with a C0 control (other than HTAB) or DEL is blocked."""
    decision = screen(DEFAULTS, "/", headers={"x-any": f"{before}{control}{after}"})
    assert decision is not None and decision.reason == Reason.CONTROL_CHARACTERS


@settings(max_examples=300, deadline=None)
@given(code=st.sampled_from([f"{code:02x}" for code in [*range(0x20), 0x7f]]), upper=st.booleans(),
       layers=st.integers(0, 2), prefix=clean_segment, in_query=st.booleans())
def test_a_percent_encoded_control_character_is_always_blocked(code: str, upper: bool, layers: int, prefix: str,
                                                               in_query: bool) -> None:
    """`%00`..`%1f` and `%7f`, in either case and encoded up to twice more, are blocked in path and query."""
    encoded = "%" + (code.upper() if upper else code)
    for _ in range(layers):
        encoded = encoded.replace("%", "%25")
    url = f"/p?q={prefix}{encoded}" if in_query else f"/{prefix}{encoded}"
    decision = screen(DEFAULTS, url)
    assert decision is not None and decision.reason == Reason.CONTROL_CHARACTERS


@settings(max_examples=300, deadline=None)
@given(head=st.lists(clean_segment, max_size=3), tail=st.lists(clean_segment, max_size=3), first=one_dot,
       second=one_dot, sep=separator, in_query=st.booleans())
def test_a_parent_segment_is_always_blocked_however_it_is_spelt(head: list[str], tail: list[str], first: str,
                                                                second: str, sep: str, in_query: bool) -> None:
    """`..` as a segment, each dot raw or (multiply) percent-encoded, with any separator, never passes."""
    walk = sep.join([*head, first + second, *tail])
    url = f"/download?file={walk}" if in_query else f"/{walk}"
    decision = screen(DEFAULTS, url)
    assert decision is not None
    assert decision.reason in (Reason.PATH_TRAVERSAL, Reason.ENCODED_SLASH)


@settings(max_examples=300, deadline=None)
@given(segments=st.lists(clean_segment, min_size=1, max_size=8),
       params=st.dictionaries(st.text("abcdefgh", min_size=1, max_size=6), clean_segment, max_size=5))
def test_clean_realistic_requests_pass(segments: list[str], params: dict[str, str]) -> None:
    """Ordinary paths and queries, with browser headers and a JWT, are never blocked by the defaults."""
    query = "&".join(f"{key}={value}" for key, value in params.items())
    url = "/" + "/".join(segments) + (f"?{query}" if query else "")
    assert screen(DEFAULTS, url, headers=BROWSER) is None
