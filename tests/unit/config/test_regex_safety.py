"""Regexes that can backtrack catastrophically are refused at load; ordinary ones (the repo's and the docs') pass."""

import ast
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from extauth.config import ConfigError
from extauth.documents.loader import load_policies
from extauth.documents.regex_safety import (
    LARGE_REPEAT,
    MAX_GROUP_DEPTH,
    MAX_PATTERN_CHARS,
    UnsafeRegexError,
    compile_safe,
)
from extauth.screening.compiler import compile_screening

ROOT = Path(__file__).parents[3]
#: Single characters and classes; overlapping ones (a, [a-z], \w, .) on purpose.
ATOMS = st.sampled_from(["a", "x", "[a-z]", "[^/]", r"\w", r"\d", ".", "[0-9a-f]", r"\S", "(?i:a)", r"[\w.-]"])
UNBOUNDED = st.sampled_from(["+", "*", "{1,}", f"{{0,{LARGE_REPEAT}}}", "{2,}", "+?", "*?", "{1,100}"])
VARIABLE = st.sampled_from(["+", "*", "?", "{1,3}", "{0,2}", "+?", "*?"])
GROUPS = st.sampled_from(["({})", "(?:{})", "(?P<{name}>{})", "(?i:{})", "(?s:{})"])
ANCHORS = st.sampled_from([("", ""), ("^", "$"), ("/api/", r"\.json"), (r"\A", r"\Z")])

NESTED_QUANTIFIER = "may backtrack catastrophically: nested quantifier"
OVERLAPPING_ALTERNATIVES = "may backtrack catastrophically: alternatives that can match the same text"


@st.composite
def nested_quantifiers(draw: st.DrawFn) -> str:
    """`(X+)+`-shaped: a variable-length repeat inside a large repeat, with neighbours X can also match."""
    atom = draw(ATOMS)
    shape = draw(st.sampled_from(["swallowing", "meeting", "matching nothing twice"]))
    if shape == "meeting":
        return draw(meeting_repeats(atom))
    if shape == "matching nothing twice":
        return draw(repeats_of_nothing(atom))
    # Neighbours inside the iteration that the inner repeat can swallow: the atom itself, or optional text.
    neighbour = draw(st.sampled_from(["", atom, f"{atom}?", r"\s?", "b?", f"(?:{atom}|b)?"]))
    before, after = (neighbour, "") if draw(st.booleans()) else ("", neighbour)
    body = before + draw(GROUPS).format(atom, name="inner") + draw(VARIABLE) + after
    start, end = draw(ANCHORS)
    return start + draw(GROUPS).format(body, name="outer") + draw(UNBOUNDED) + end


@st.composite
def meeting_repeats(draw: st.DrawFn, atom: str) -> str:
    """`(X*,X*)*` or `(X+Y?X+;)*`: two variable-length repeats sharing characters meet, across the boundary
    between iterations (whatever separates them inside one) or inside one iteration (with only `Y?` between)."""
    first = draw(GROUPS).format(atom, name="first") + draw(VARIABLE)
    second = draw(GROUPS).format(atom, name="second") + draw(VARIABLE)
    if draw(st.booleans()):
        body = second + draw(st.sampled_from([",", ";", "=", "/", "--", "[,;]"])) + first
    else:
        body = first + draw(st.sampled_from(["", "b?", r"\s*", "(?:b|c)?"])) + second + draw(st.sampled_from(["", ";"]))
    start, end = draw(ANCHORS)
    return start + draw(GROUPS).format(body, name="outer") + draw(UNBOUNDED) + end


@st.composite
def repeats_of_nothing(draw: st.DrawFn, atom: str) -> str:
    """`(?:,(?:a?)?)*`: a repeat whose body can match nothing, inside a large repeat, whatever surrounds it."""
    inner = draw(GROUPS).format(atom, name="inner") + draw(st.sampled_from(["?", "*", "??", "*?", "{0,2}"]))
    around = draw(st.sampled_from(["", ",", "x", "[,;]"]))
    body = around + draw(GROUPS).format(inner, name="middle") + draw(VARIABLE) + draw(st.sampled_from(["", ";"]))
    start, end = draw(ANCHORS)
    return start + draw(GROUPS).format(body, name="outer") + draw(UNBOUNDED) + end


@st.composite
def overlapping_alternatives(draw: st.DrawFn) -> str:
    """`(a|a)*`-shaped: alternatives under a large repeat that can begin with the same text."""
    atom = draw(ATOMS)
    # Then the second may stop, or both go on with a `b`: they agree on a prefix however they continue (and are
    # not both single characters, which `re` would merge into one class).
    first = atom + draw(st.sampled_from(["", "b", "bx", "b+"]))
    second = atom + draw(st.sampled_from(["b?", "b*c", "(?:b|y)+", "b{0,2}"]))
    other = draw(st.lists(st.sampled_from(["z", "-", "%20", "#"]), max_size=2))
    branches = draw(st.permutations([first, second, *other]))
    start, end = draw(ANCHORS)
    return start + draw(GROUPS).format("|".join(branches), name="outer") + draw(UNBOUNDED) + end


KNOWN_EVIL = [
    r"(a+)+", r"(a|a)*", r"(.*)*", r"(\w+\s?)*", r"^(\w+\s?)*$", r"(x\w+y)*", r"(a*)*", r"(a+a+)+", r"(.*a){12}",
    r"(a|aa)+", r"(a|a?)+", r"(?:[^/]+|/)*", r"^(([a-z])+.)+[A-Z]([a-z])+$", r"((ab)*)+", r"(a{1,3})+",
    r"(?:.*,)*x", r"(?:a*b*)*", r"(?=(a+)+)", r"(?>(a+)+b)", r"(\d+|\d+\.\d+)*", r"(?i)(?:A+a)+",
    r"(\s*,\s*)*", r"(a+a+b)*", r"((a+){5}){5}", r"(?:[a-z]+[0-9]*)*", r"(?:\w+\s?\w+;)*",
    r"(?:,(?:a?)?)*", r"(?:\w(?:,*)?)*", r"(?:(?:b?+)+a)+",
    r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$",
]
ORDINARY = [
    r"(?:/[a-z]+)*", r"(?:get|put|post)+", r"(?>a+)+", r"(a+)*+", r"(?:\d{1,3}\.){3}\d{1,3}", r"/api/v[12]/.*",
    r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}", r"(?:[a-z]+-)*[a-z]+", r"(?:[^/]+/)*",
    r"(?:[a-z0-9]|-)+", r"(?:/(?:v1|v2))*", r"\bselect\b.*\bfrom\b", r"^Bearer [A-Za-z0-9._~+/-]+=*$",
    r"(\w|\d)+",  # `re` turns single-character alternatives into one class: nothing to backtrack over
    r"(?:ab{0,9})+", r"(a+){1,9}", r"((a+){3}){3}", r"(?:a(?:b+c)?)*", r"(?:,\s*[a-z]+)*",
    r"(?:[a-z]+\.)+(?:com|org)", r"/tenants/(?P<tenant>[^/]+)/orders(?:/\d+)*",
]


def repository_patterns() -> list[str]:
    """Every regex written in the repo: extauth's own (`re.compile` constants) and the docs' and policies'."""
    found = set()
    for file in (ROOT / "extauth").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "compile" and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.add(node.args[0].value)
    texts = [file.read_text() for file in [*(ROOT / "docs").glob("*.md"), *(ROOT / "envoy").rglob("*.yaml")]]
    for text in texts:
        for value in re.findall(r"\b(?:regex|pattern): *('[^'\n]*'|\"[^\"\n]*\")", text):
            found.add(yaml.safe_load(value))
    return sorted(found)


@given(pattern=nested_quantifiers())
def test_generated_nested_quantifiers_are_refused(pattern: str) -> None:
    """Every `(X+)+`-shaped pattern (any atom, quantifier, group kind, neighbour, anchoring) is refused."""
    with pytest.raises(UnsafeRegexError, match=NESTED_QUANTIFIER):
        compile_safe(pattern)


@given(pattern=overlapping_alternatives())
def test_generated_overlapping_alternatives_under_a_repeat_are_refused(pattern: str) -> None:
    """Every `(a|ab)*`-shaped pattern (alternatives starting alike, in any order, among others) is refused."""
    with pytest.raises(UnsafeRegexError, match="may backtrack catastrophically"):
        compile_safe(pattern)


@pytest.mark.parametrize("pattern", KNOWN_EVIL)
def test_known_evil_patterns_are_refused(pattern: str) -> None:
    """The classic ReDoS patterns (OWASP's list among them) are refused."""
    with pytest.raises(UnsafeRegexError, match="may backtrack catastrophically"):
        compile_safe(pattern)


@pytest.mark.parametrize("flags", [0, re.IGNORECASE], ids=["exact", "ignorecase"])
@pytest.mark.parametrize("pattern", ORDINARY + repository_patterns())
def test_ordinary_and_repository_patterns_are_accepted(pattern: str, flags: int) -> None:
    """Patterns whose repeats split text one way only, and every regex the repo and its docs use, pass."""
    assert compile_safe(pattern, flags).pattern == pattern


def test_policy_regexes_are_checked_as_if_matched_case_insensitively(tmp_path: Path) -> None:
    """`(?:x[a-z]+Y)*` is safe case-sensitively but not when `[a-z]` also matches `Y`; paths may match either way."""
    assert compile_safe("(?:x[a-z]+Y)*")
    path = tmp_path / "policy.yaml"
    path.write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\nroutes:\n  - name: r\n"
                    "    match: {path: {regex: '/a(?:x[a-z]+Y)*'}}\n    public: true\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:6: routes\[0\]\.match\.path\.regex: "
                                          f"{NESTED_QUANTIFIER}"):
        load_policies(path)


def test_the_repository_harvest_is_not_empty() -> None:
    """The harvest above really reads the docs (the screening examples) and extauth's own patterns."""
    patterns = repository_patterns()
    assert r"(?i)union(?:\s|\+|%20)+(?:all(?:\s|\+|%20)+)?select" in patterns and len(patterns) > 15


@given(depth=st.integers(MAX_GROUP_DEPTH + 1, 1900), kind=st.sampled_from(["(", "(?:", "(?=", "(?i:"]))
def test_groups_nested_beyond_the_bound_are_refused_before_compiling(depth: int, kind: str) -> None:
    """Deeply nested groups are refused by count, never handed to `re.compile` (which overflows the stack)."""
    with pytest.raises(UnsafeRegexError, match=f"groups nested {depth} deep; the limit is {MAX_GROUP_DEPTH}"):
        compile_safe(kind * depth + "a" + ")" * depth)


def test_a_pattern_over_the_length_limit_is_refused_and_one_at_it_is_checked() -> None:
    """Length is bounded; up to the bound, even long sequences and many alternatives are analysed."""
    with pytest.raises(UnsafeRegexError, match=f"is {MAX_PATTERN_CHARS + 1} characters; the limit is"):
        compile_safe("a" * (MAX_PATTERN_CHARS + 1))
    alternatives = "|".join(f"w{i}x" for i in range(1000))
    assert compile_safe(f"(?:{alternatives})+") and compile_safe("(?:" + "a" * (MAX_PATTERN_CHARS - 5) + ")*")
    with pytest.raises(UnsafeRegexError, match=NESTED_QUANTIFIER):
        compile_safe("(?:" + "[ab]+a" * 1000 + "c)*")


def test_parentheses_in_classes_and_escapes_do_not_count_as_nesting() -> None:
    """`[(]` and `\\(` are literal characters, so many of them are no nesting at all."""
    pattern = r"[(]" * 100 + r"\(" * 100 + "[^(]" * 100 + "[](]" * 100
    assert compile_safe(pattern).pattern == pattern


def test_a_screening_signature_that_may_backtrack_is_a_load_error_naming_its_field(tmp_path: Path) -> None:
    """Screening signatures get the same check, reported as file:line: signatures[i].pattern."""
    path = tmp_path / "screening.yaml"
    path.write_text("apiVersion: extauth/v1\nkind: Screening\nmetadata: {name: s}\nsignatures:\n"
                    "  - {name: ok, targets: [path], pattern: '/\\.git(?:/|$)'}\n"
                    "  - name: evil\n    targets: [query]\n    pattern: '(\\w+\\s?)*;'\n")
    with pytest.raises(ConfigError) as raised:
        compile_screening(load_policies(path).screening)
    assert str(raised.value) == (f"{path}:8: signatures[1].pattern: {NESTED_QUANTIFIER}: a repeated part contains "
                                 r"a variable-length repeat that can match the text around it, as in (a+)+ or "
                                 r"(\w+\s?)*")


def documented_examples() -> list[tuple[str, bool]]:
    """(pattern, refused?) for each example in the rule table of docs/policy.md."""
    text = (ROOT / "docs" / "policy.md").read_text()
    table = text.split("## Regexes that cannot backtrack catastrophically")[1].split("\n\n")[2]
    examples = []
    for row in table.splitlines()[2:]:
        refused, accepted = row.replace("\\|", "\0").split("|")[2:4]
        for cell, is_refused in ((refused, True), (accepted, False)):
            examples += [(span.replace("\0", "|"), is_refused) for span in re.findall(r"`([^`]+)`", cell)]
    return examples


def test_the_documented_examples_are_decided_as_documented() -> None:
    """Every pattern docs/policy.md lists as refused is refused, and every one it lists as accepted passes."""
    examples = documented_examples()
    assert len(examples) > 15
    for pattern, refused in examples:
        if refused:
            with pytest.raises(UnsafeRegexError):
                compile_safe(pattern, re.IGNORECASE)
        else:
            assert compile_safe(pattern, re.IGNORECASE)
