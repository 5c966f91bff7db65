"""Merging Screening documents and every load error, asserted as the exact `file:line: field: message`."""

import pytest
from support.screening_inline import HEAD, loaded, screener_for

from extauth.config import ConfigError
from extauth.documents.screening import DEFAULT_METHODS, Blocks, Limits
from extauth.screening.compiler import compile_screening


def errors(*texts: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        screener_for(*texts)
    return [str(issue) for issue in caught.value.issues]


def test_without_documents_the_defaults_apply() -> None:
    """No Screening document: screening is on, with the default methods, limits and blocks."""
    screener = compile_screening(())
    assert screener.methods == frozenset(DEFAULT_METHODS)
    assert screener.limits == Limits()
    assert screener.blocks == Blocks(path_traversal=True, control_characters=True, encoded_slashes=True)
    assert screener.signatures == ()


def test_parts_set_in_different_documents_are_merged() -> None:
    """One file sets methods, another limits; blocks keep their defaults; a part left out keeps its default."""
    screener = screener_for(HEAD + "metadata: {name: a}\nmethods: [GET]\n",
                            HEAD + "metadata: {name: b}\nlimits: {max_headers: 50}\n")
    assert screener.methods == frozenset({"GET"})
    assert screener.limits == Limits(max_headers=50)
    assert screener.limits.max_uri_bytes == 8192
    assert screener.blocks == Blocks()


def test_signatures_from_every_document_apply() -> None:
    """Signatures are collected from all documents, in file order, named `<document>/<signature>`."""
    screener = screener_for(
        HEAD + "metadata: {name: edge}\nmethods: [GET]\nsignatures:\n  - {name: a, targets: [path], pattern: x1}\n",
        HEAD + "metadata: {name: team}\nsignatures:\n  - {name: b, targets: [query], pattern: x2}\n",
    )
    assert [signature.rule for signature in screener.signatures] == ["edge/a", "team/b"]


def test_two_documents_setting_methods_is_an_error_naming_both() -> None:
    """Only one document may set `methods`; the error names the second and where the first set it."""
    assert errors(HEAD + "metadata: {name: a}\nmethods: [GET]\n",
                  HEAD + "metadata: {name: b}\n\nmethods: [POST]\n") == [
        "b.yaml:5: methods: already set in a.yaml:4; only one Screening document may set methods"]


def test_limits_and_blocks_may_each_be_set_once() -> None:
    """`limits` and `blocks` follow the same rule, and every conflict is reported at once."""
    first = HEAD + "metadata: {name: a}\nlimits: {max_headers: 10}\nblocks: {encoded_slashes: false}\n"
    second = HEAD + "metadata: {name: b}\nblocks:\n  path_traversal: false\nlimits: {max_headers: 20}\n"
    assert errors(first, second) == [
        "b.yaml:6: limits: already set in a.yaml:4; only one Screening document may set limits",
        "b.yaml:5: blocks: already set in a.yaml:5; only one Screening document may set blocks",
    ]


def test_two_documents_in_one_file_conflict_too() -> None:
    """Two documents separated by `---` in one file count as two documents."""
    text = HEAD + "metadata: {name: a}\nmethods: [GET]\n---\n" + HEAD + "metadata: {name: b}\nmethods: [PUT]\n"
    with pytest.raises(ConfigError) as caught:
        compile_screening(loaded(text))
    assert str(caught.value) == ("screening.yaml:9: methods: already set in screening.yaml:4; "
                                 "only one Screening document may set methods")


def test_a_signature_name_used_in_two_documents_is_an_error() -> None:
    """Signature names are unique across all Screening documents."""
    sig = "signatures:\n  - {name: sqli, targets: [query], pattern: union}\n"
    assert errors(HEAD + "metadata: {name: a}\n" + sig, HEAD + "metadata: {name: b}\n" + sig) == [
        "b.yaml:5: signatures[0].name: signature 'sqli' already defined in a.yaml:5"]


def test_a_signature_name_used_twice_in_one_document_is_an_error() -> None:
    """Also within one document, even on one line."""
    assert errors(HEAD + "metadata: {name: a}\nsignatures: [{name: s, targets: [path], pattern: x},"
                         " {name: s, targets: [path], pattern: y}]\n") == [
        "a.yaml:4: signatures[1].name: signature 's' already defined in a.yaml:4"]


def test_an_invalid_pattern_names_file_line_and_field() -> None:
    """A pattern that does not compile is a load error with Python's own explanation."""
    assert errors(HEAD + "metadata: {name: a}\nsignatures:\n  - name: bad\n    targets: [path]\n"
                         "    pattern: 'admin('\n") == [
        "a.yaml:7: signatures[0].pattern: invalid regular expression: missing ), unterminated subpattern "
        "at position 5"]


@pytest.mark.parametrize("pattern", [".*", "a*", "(?:)", "^", "x?", "[^z]"])
def test_a_pattern_that_matches_anything_is_an_error(pattern: str) -> None:
    """A signature that would block every request is refused at load."""
    assert errors(HEAD + f"metadata: {{name: a}}\nsignatures:\n  - {{name: all, targets: [path], "
                         f"pattern: '{pattern}'}}\n") == [
        "a.yaml:5: signatures[0].pattern: matches any text (even 'x', '/' and '0'), so it would block every request"]


def test_a_pattern_that_only_matches_empty_text_is_allowed() -> None:
    """`^$` on a named header matches only when that header is present but empty: a legitimate rule."""
    screener = screener_for(HEAD + "metadata: {name: a}\nsignatures:\n"
                                   "  - {name: blank-ua, targets: [headers], header: user-agent, pattern: '^\\s*$'}\n")
    assert [signature.rule for signature in screener.signatures] == ["a/blank-ua"]


def test_header_without_the_headers_target_is_an_error() -> None:
    """`header` narrows the headers target, so it needs `headers` in targets."""
    assert errors(HEAD + "metadata: {name: a}\nsignatures:\n  - name: ua\n    targets: [path]\n"
                         "    header: user-agent\n    pattern: curl\n") == [
        "a.yaml:7: signatures[0].header: applies only with target 'headers'; add it to targets or remove header"]


def test_every_problem_is_reported_at_once() -> None:
    """Conflicts, duplicate names and bad patterns across files come in one ConfigError."""
    assert errors(
        HEAD + "metadata: {name: a}\nmethods: [GET]\nsignatures:\n  - {name: s, targets: [path], pattern: '['}\n",
        HEAD + "metadata: {name: b}\nmethods: [GET]\nsignatures:\n  - {name: s, targets: [path], pattern: ok}\n",
    ) == [
        "a.yaml:6: signatures[0].pattern: invalid regular expression: unterminated character set at position 0",
        "b.yaml:4: methods: already set in a.yaml:4; only one Screening document may set methods",
        "b.yaml:6: signatures[0].name: signature 's' already defined in a.yaml:6",
    ]


def test_schema_errors_carry_lines_from_the_yaml() -> None:
    """Out-of-range limits and unknown targets are reported by validation with file:line: field."""
    with pytest.raises(ConfigError) as caught:
        loaded(HEAD + "metadata: {name: a}\nlimits:\n  max_headers: 0\nsignatures:\n"
                      "  - {name: s, targets: [body], pattern: x}\n")
    assert [str(issue) for issue in caught.value.issues] == [
        "screening.yaml:5: limits.max_headers: Input should be greater than or equal to 1",
        "screening.yaml:7: signatures[0].targets[0]: Input should be 'path', 'query' or 'headers'",
    ]
