"""What the shared YAML loader refuses before building anything: anchors, aliases, deep nesting, odd scalars."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.config import ConfigError, load_config
from extauth.documents.loader import load_policies
from extauth.documents.yamlsource import MAX_FILE_BYTES, MAX_NESTING_DEPTH, MAX_NUMBER_CHARS, parse_documents

POLICY_HEAD = "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\n"
ANCHOR_NAMES = st.text(st.sampled_from("abcxyz019_-"), min_size=1, max_size=8)
LOADERS = pytest.mark.parametrize("load", [load_config, load_policies], ids=["config", "policy"])
SETTINGS = settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


def alias_bomb(name: str, levels: int, width: int) -> str:
    """`levels` anchored lists, each holding `width` aliases of the previous one: width**levels leaves."""
    lines = [f"l0: &{name}0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &{name}{i} [{', '.join([f'*{name}{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def spellings_with_an_anchor(name: str) -> list[tuple[str, int]]:
    """(document, line of the first anchor or alias) for every place YAML allows one."""
    return [
        (f"a: &{name} x\n", 1),
        (f"a: &{name} [1]\n", 1),
        (f"a: &{name}\n  b: 1\n", 1),
        (f"a:\n  - &{name} 1\n", 2),
        (f"x: 1\n&{name} a: 1\n", 2),
        (f"x: 1\ny: *{name}\n", 2),
        (f"x: 1\ny: [1, *{name}]\n", 2),
        (f"x: 1\n? *{name}\n: 1\n", 2),
        (f"x: 1\ny: &{name} [*{name}]\n", 2),
        (f"x: 1\ny: !!str &{name} a\n", 2),
        (f"x: 1\ny: {{<<: *{name}}}\n", 2),
        (f"x: 1\n---\n&{name} y: 2\n", 3),
    ]


@given(name=ANCHOR_NAMES, index=st.integers(0, 11))
def test_anchors_and_aliases_are_refused_at_their_line_in_every_position(name: str, index: int) -> None:
    """An anchor or alias anywhere (value, item, key, tagged, merge, later document) is a file:line error naming it."""
    text, line = spellings_with_an_anchor(name)[index]
    with pytest.raises(ConfigError) as raised:
        parse_documents(Path("p.yaml"), text)
    [issue] = raised.value.issues
    assert (issue.file, issue.line) == (Path("p.yaml"), line)
    assert issue.message.startswith("YAML anchors and aliases are not allowed (")
    assert f"&{name})" in issue.message or f"*{name})" in issue.message


@LOADERS
@SETTINGS
@given(name=ANCHOR_NAMES, levels=st.integers(8, 40), width=st.integers(8, 20))
def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path: Path, load, name: str, levels: int,
                                                      width: int) -> None:
    """A billion-laughs document (at least 8**8 leaves, up to 20**40) is refused at its first anchor; had it
    been expanded, the test would run out of memory instead of passing."""
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(name, levels, width))
    refused = rf"bomb\.yaml:1: YAML anchors and aliases are not allowed \(anchor &{name}0\)"
    with pytest.raises(ConfigError, match=refused):
        load(path)


@LOADERS
@SETTINGS
@given(name=ANCHOR_NAMES, depth=st.integers(0, 5))
def test_a_recursive_alias_is_refused(tmp_path: Path, load, name: str, depth: int) -> None:
    """A node that contains an alias of itself (at any depth) is refused, not followed until the stack overflows."""
    path = tmp_path / "loop.yaml"
    path.write_text(POLICY_HEAD + "routes: &" + name + " " + "[" * (depth + 1) + "*" + name + "]" * (depth + 1) + "\n")
    refused = rf"loop\.yaml:4: YAML anchors and aliases are not allowed \(anchor &{name}\)"
    with pytest.raises(ConfigError, match=refused):
        load(path)


@LOADERS
@SETTINGS
@given(levels=st.integers(MAX_NESTING_DEPTH + 1, 20_000), block=st.booleans())
def test_nesting_beyond_the_bound_is_a_config_error(tmp_path: Path, load, levels: int, block: bool) -> None:
    """Lists or mappings nested deeper than the bound (flow or block style) are refused, never a RecursionError."""
    path = tmp_path / "deep.yaml"
    if block:
        path.write_text("".join(f"{' ' * i}k{i}:\n" for i in range(min(levels, 400))) + " " * 400 + "v: 1\n")
    else:
        path.write_text("a: " + "[" * levels + "]" * levels + "\n")
    with pytest.raises(ConfigError, match=rf"deep\.yaml:\d+: nested deeper than {MAX_NESTING_DEPTH} levels"):
        load(path)


def test_nesting_up_to_the_bound_is_accepted() -> None:
    """The bound refuses only what is beyond it: a document exactly MAX_NESTING_DEPTH collections deep loads."""
    inner = MAX_NESTING_DEPTH - 1  # the top-level mapping is the first collection
    [(document, _)] = parse_documents(Path("p.yaml"), "a: " + "[" * inner + "1" + "]" * inner + "\n")
    data = document["a"]
    for _ in range(inner):
        [data] = data
    assert data == 1


TOO_LONG = f"invalid YAML value: a number of {{length}} characters; the limit is {MAX_NUMBER_CHARS}"
SCALARS_PYTHON_REFUSES = {
    "5000-digit integer": ("a: " + "9" * 5000 + "\n", TOO_LONG.format(length=5000)),
    "4000-digit hex integer": ("a: 0x" + "f" * 3998 + "\n", TOO_LONG.format(length=4000)),
    "base-60 integer (quadratic to build)": ("a: 1" + ":1" * 100_000 + "\n", TOO_LONG.format(length=200_001)),
    "long float": ("a: !!float 1" + "0" * 200 + ".5\n", TOO_LONG.format(length=203)),
    "month 13": ("a: 2001-13-01\n", "invalid YAML value: month must be in 1..12"),
    "February 30": ("a: !!timestamp 2001-02-30\n", "invalid YAML value: day is out of range for month"),
    "huge key": ("? " + "1" * 5000 + "\n: x\n", TOO_LONG.format(length=5000)),
    "empty tagged float": ("a: !!float\n", "invalid YAML value: cannot read '' as float"),
    "empty tagged int": ("a: !!int ''\n", "invalid YAML value: cannot read '' as int"),
}


@LOADERS
@pytest.mark.parametrize("text, message", SCALARS_PYTHON_REFUSES.values(), ids=SCALARS_PYTHON_REFUSES.keys())
def test_scalars_python_cannot_construct_are_config_errors(tmp_path: Path, load, text: str, message: str) -> None:
    """A number too long to be a setting, or a value Python refuses to construct, is a file:line error."""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path}:") and message in str(raised.value)


@LOADERS
def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path, load) -> None:
    """A file larger than MAX_FILE_BYTES is refused by its size, without being read or parsed."""
    path = tmp_path / "big.yaml"
    with path.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ConfigError, match=rf"big\.yaml: file is {MAX_FILE_BYTES + 1} bytes; the limit is"):
        load(path)
