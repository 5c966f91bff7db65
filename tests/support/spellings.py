"""Spellings of repeated header and query values, for property tests that hold every spelling of a request to
the decision for its canonical one (docs/policy.md, "Repeated values").

Each generated spelling carries the logical values an upstream may read from it, so a test can compute the
expected decision from the decisions for each value spelt canonically (`combined`).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from hypothesis import strategies as st

from extauth.reasons import Reason

#: HTTP optional whitespace: what a client may put around a header value or list element.
_OWS = st.text(alphabet=" \t", max_size=2)
#: Query padding as a client may spell it: `+` and `%20` are spaces, `%09` a tab.
_QUERY_PADDING = st.lists(st.sampled_from(["+", "%20", "%09"]), max_size=2).map("".join)


@dataclass(frozen=True)
class HeaderSpelling:
    #: One entry per header line the client sends; each line may itself be a comma-separated list.
    lines: tuple[str, ...]
    values: tuple[str, ...]

    @property
    def joined(self) -> str:
        """The one value Envoy hands extauth for repeated header lines: the lines joined with `,`."""
        return ",".join(self.lines)


@dataclass(frozen=True)
class QuerySpelling:
    query: str
    #: Every value of every spelling of the parameter; None when no occurrence is spelt exactly by its name.
    values: tuple[str | None, ...]


def header_spellings(values: Sequence[str]) -> st.SearchStrategy[HeaderSpelling]:
    """1-3 header lines of 1-3 comma-separated values each, every value padded with optional whitespace."""
    element = st.tuples(_OWS, st.sampled_from(values), _OWS)
    line = st.lists(element, min_size=1, max_size=3)
    return st.lists(line, min_size=1, max_size=3).map(lambda lines: HeaderSpelling(
        tuple(",".join(left + value + right for left, value, right in parts) for parts in lines),
        tuple(value for parts in lines for _, value, _ in parts)))


@st.composite
def _percent_encoded(draw: st.DrawFn, text: str) -> str:
    """`text` with any of its characters percent-encoded (either hex case) and spaces possibly as `+`."""
    out = []
    for character in text:
        how = draw(st.sampled_from(["plain", "upper", "lower"]))
        if how == "plain":
            out.append("+" if character == " " else quote(character, safe=""))
        else:
            escaped = f"%{ord(character):02X}"
            out.append(escaped if how == "upper" else escaped.lower())
    return "".join(out)


@st.composite
def _name_spelling(draw: st.DrawFn, name: str) -> tuple[str, bool]:
    """A spelling of the parameter name and whether it decodes to exactly `name`: any letter case, padding,
    a PHP/Rails array suffix, percent-encoded characters."""
    cased = "".join(draw(st.sampled_from([character.lower(), character.upper()])) for character in name)
    padding = draw(_QUERY_PADDING)
    suffix = draw(st.sampled_from(["", "", "[]", "[0]", "%5B%5D"]))
    exact = cased == name and not padding and not suffix
    return draw(_percent_encoded(cased)) + padding + suffix, exact


@st.composite
def query_spellings(draw: st.DrawFn, name: str, values: Sequence[str]) -> QuerySpelling:
    """1-4 occurrences of the parameter under generated spellings, shuffled among unrelated parameters."""
    occurrences = draw(st.lists(st.tuples(_name_spelling(name), st.sampled_from(values)), min_size=1, max_size=4))
    pairs = [f"{spelt}={draw(_QUERY_PADDING)}{draw(_percent_encoded(value))}{draw(_QUERY_PADDING)}"
             for (spelt, _), value in occurrences]
    pairs += draw(st.lists(st.sampled_from(["page=2", "lang=en", f"{name}x=1", f"x{name}=2"]), max_size=2))
    pairs = draw(st.permutations(pairs))
    found: list[str | None] = [value for _, value in occurrences]
    if not any(exact for (_, exact), _ in occurrences):
        found.append(None)  # an upstream that reads only the exact name finds none
    return QuerySpelling("&".join(pairs), tuple(found))


def combined(canonical: Iterable[Reason]) -> Reason:
    """The documented decision for a request whose values decide `canonical` one by one: a deny rule that
    matches any of them denies; otherwise values that all decide alike decide so; disagreeing ones are a 400."""
    reasons = set(canonical)
    if Reason.DENIED_BY_RULE in reasons:
        return Reason.DENIED_BY_RULE
    if len(reasons) == 1:
        return reasons.pop()
    return Reason.AMBIGUOUS_REQUEST
