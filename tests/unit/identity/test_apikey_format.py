"""The API key format: a prefix, 256 random bits and a CRC32 checksum that refuses every near miss of a key."""

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from extauth.audit.redact import MASK, scrub_text
from extauth.identity.apikey_format import (
    BASE62,
    BODY_CHARS,
    CHECKSUM_CHARS,
    KEY_CHARS,
    KEY_PATTERN,
    PREFIX,
    checksum,
    key_problem,
    new_api_key,
)

#: Keys as `new_api_key` makes them, from bodies hypothesis chooses (so a failure replays).
keys = st.text(alphabet=BASE62, min_size=BODY_CHARS, max_size=BODY_CHARS).map(
    lambda body: PREFIX + body + checksum(PREFIX + body))


def test_new_keys_are_well_formed_and_distinct() -> None:
    """Each key has the prefix, the length, base62 characters and a matching checksum; none repeats."""
    made = {new_api_key() for _ in range(200)}
    assert len(made) == 200
    for key in made:
        assert key_problem(key) is None
        assert len(key) == KEY_CHARS and key.startswith(PREFIX)
        assert re.fullmatch(KEY_PATTERN, key)


def test_the_body_draws_every_base62_character() -> None:
    """The body is drawn from all 62 characters (the entropy the docs claim), not a subset."""
    seen = set("".join(new_api_key()[len(PREFIX):-CHECKSUM_CHARS] for _ in range(300)))
    assert seen == set(BASE62)


@given(key=keys, data=st.data())
def test_any_single_character_substitution_is_refused(key: str, data: st.DataObject) -> None:
    """A typo anywhere (prefix, body or checksum) is refused by the format alone."""
    position = data.draw(st.integers(0, len(key) - 1), label="position")
    replacement = data.draw(st.characters().filter(lambda char: char != key[position]), label="replacement")
    assert key_problem(key[:position] + replacement + key[position + 1:]) is not None


@given(key=keys, data=st.data())
def test_any_case_change_is_refused(key: str, data: st.DataObject) -> None:
    """Changing the case of letters (a key read aloud, a case-folding proxy) is refused: up to four flips
    provably (CRC32 has Hamming distance 5 at this length), more with odds of 2**-32 against."""
    letters = [index for index, char in enumerate(key) if char.isalpha()]
    flipped = set(data.draw(st.lists(st.sampled_from(letters), min_size=1), label="flipped"))
    changed = "".join(char.swapcase() if index in flipped else char for index, char in enumerate(key))
    assert key_problem(changed) is not None


@given(key=keys, data=st.data())
def test_any_truncation_or_extension_is_refused(key: str, data: st.DataObject) -> None:
    """A key cut short (a copy-paste that missed the end or start) or with text appended is refused."""
    start = data.draw(st.integers(0, len(key)), label="start")
    end = data.draw(st.integers(start, len(key)), label="end")
    if (start, end) != (0, len(key)):
        assert key_problem(key[start:end]) is not None
    assert key_problem(key + data.draw(st.text(min_size=1, max_size=8), label="appended")) is not None


@given(key=keys, data=st.data())
def test_any_adjacent_transposition_is_refused(key: str, data: st.DataObject) -> None:
    """Two neighbouring characters swapped (the commonest typing slip) are refused when they differ."""
    position = data.draw(st.integers(0, len(key) - 2), label="position")
    swapped = key[:position] + key[position + 1] + key[position] + key[position + 2:]
    if swapped != key:
        assert key_problem(swapped) is not None


@given(text=st.text(max_size=80))
def test_arbitrary_text_is_refused_without_raising(text: str) -> None:
    """Whatever a client sends as a key, the check answers with a reason and never raises."""
    if not (len(text) == KEY_CHARS and text.startswith(PREFIX) and checksum(text[:-CHECKSUM_CHARS])
            == text[-CHECKSUM_CHARS:]):
        assert key_problem(text) is not None


@given(key=keys)
def test_the_problem_never_quotes_the_key(key: str) -> None:
    """The reason goes to the client and the audit trail, so it names no part of what was sent."""
    near_miss = key[:-1] + ("0" if key[-1] != "0" else "1")
    problem = key_problem(near_miss)
    assert problem is not None and key[len(PREFIX):len(PREFIX) + 8] not in problem


@given(key=keys, before=st.sampled_from(["", "/api/", "?k=", "x-key ", "%20"]))
def test_the_audit_scrubber_masks_a_key_wherever_it_appears(key: str, before: str) -> None:
    """A key that turns up in a path, a query or a header value is masked by its shape."""
    assert scrub_text(f"{before}{key}/rest") == f"{before}{MASK}/rest"


def test_the_scanner_regex_in_the_docs_is_the_key_pattern() -> None:
    """docs/apikeys.md gives secret scanners KEY_PATTERN between word boundaries, and it finds a key in text."""
    docs = (Path(__file__).parents[3] / "docs" / "apikeys.md").read_text()
    documented = docs.split("<!-- example: skip: a regular expression")[1].split("```")[1].strip()
    assert documented == rf"\b{KEY_PATTERN}\b"
    key = new_api_key()
    assert re.findall(documented, f"token={key}; other=eak_short") == [key]
