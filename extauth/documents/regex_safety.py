"""Refuse, at load, regular expressions that can backtrack catastrophically (docs/policy.md, docs/screening.md).

Python's `re` is a backtracking matcher: `(a+)+$` takes 2**n steps on `aaaa…!`, so one policy regex could stall
every Check. The check is static, on the parsed pattern (`re._parser`), and refuses a repeat that can run many
times (unbounded, or at least LARGE_REPEAT) whose body can match the same text in more than one way:

* nested quantifier: the body holds a variable-length repeat X, and reading on from X (to the end of the body,
  then from its start again, as the next iteration does) every part could be matched by X's characters until
  X itself or another variable-length repeat sharing them comes round. Then a run of those characters can be
  split between the repeats (and the iterations) in exponentially many ways: `(a+)+`, `(.*)*`, `(\\w+\\s?)*`,
  `(x\\w+y)*`, `(\\s*,\\s*)*`, `(a+a+b)*`; `(?:/[a-z]+)*` passes, because `/` is not in `[a-z]`;
  A repeat whose body can match nothing (`(?:a?)?`, `(?:b*)+`) counts on its own: it can match nothing in
  more than one way, so each iteration around it doubles the work;
* overlapping alternatives: the body holds an alternation whose branches can start with the same text:
  `(a|a)*`, `(a|ab)*`, `(\\d+|\\d+\\.\\d+)*`; `(?:get|put)+` passes: the branches differ at their second character.

Possessive repeats (`a*+`) and atomic groups (`(?>…)`) never backtrack into themselves and are exempt. Characters
are compared on a sample alphabet (ASCII plus representative non-ASCII letters, digits and spaces), which is
exact for the classes policies use. Group nesting and pattern length are bounded, because the `re` compiler
recurses per group and the check grows with the length.
"""

import functools
import re
from collections.abc import Iterator
from re import _constants as sre
from re import _parser

#: A repeat allowed to run this many times or more counts as large (`{0,9}` is not, `{0,10}` and `*` are),
#: counting the repeats around it: in `((a+){5}){5}` the inner one runs 25 times.
LARGE_REPEAT = 10
#: Parentheses inside each other; beyond this, `re.compile` itself may overflow the stack.
MAX_GROUP_DEPTH = 32
#: Longer patterns are refused: no policy needs one, and compiling and checking grow with the length.
MAX_PATTERN_CHARS = 10_000
#: How many parts after a repeat are compared; past this many, they are assumed to match (refuse).
_NEIGHBOURS_COMPARED = 64

_ALPHABET = "".join(map(chr, range(128))) + "\x85\xa0éßİſK\u2028\u3000٣中\U0001f600\uffff"
_ALL = (1 << len(_ALPHABET)) - 1
_CHAR_FLAGS = sre.SRE_FLAG_IGNORECASE | sre.SRE_FLAG_DOTALL | sre.SRE_FLAG_ASCII
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT)
_SINGLE_CHAR = (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN)
_CATEGORIES = {
    sre.CATEGORY_DIGIT: str.isdecimal,
    sre.CATEGORY_SPACE: str.isspace,
    sre.CATEGORY_WORD: lambda ch: ch.isalnum() or ch == "_",
}
_NEGATED_CATEGORIES = {
    sre.CATEGORY_NOT_DIGIT: sre.CATEGORY_DIGIT,
    sre.CATEGORY_NOT_SPACE: sre.CATEGORY_SPACE,
    sre.CATEGORY_NOT_WORD: sre.CATEGORY_WORD,
}

Item = tuple[object, object]


class UnsafeRegexError(ValueError):
    """The pattern compiles but may backtrack catastrophically (or nests groups too deeply to compile safely)."""


def compile_safe(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """`re.compile(pattern, flags)` for a pattern that passes the checks above; re.error or UnsafeRegexError
    otherwise. Pass re.IGNORECASE where the pattern may be used case-insensitively: more characters overlap."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UnsafeRegexError(f"the pattern is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}")
    depth = _group_depth(pattern)
    if depth > MAX_GROUP_DEPTH:
        raise UnsafeRegexError(f"groups nested {depth} deep; the limit is {MAX_GROUP_DEPTH}")
    compiled = re.compile(pattern, flags)
    tree = _parser.parse(pattern, flags)
    problem = _first_problem(tree.data, tree.state.flags)
    if problem is not None:
        raise UnsafeRegexError(f"may backtrack catastrophically: {problem}")
    return compiled


def _group_depth(pattern: str) -> int:
    """Deepest parenthesis nesting, skipping escapes and character classes (an upper bound for `re`'s)."""
    depth = deepest = index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 1
        elif char == "[":
            index += 2 if pattern[index + 1:index + 2] == "^" else 1  # a leading `]` (after `^`) is literal
            if pattern[index:index + 1] == "]":
                index += 1
            while index < len(pattern) and pattern[index] != "]":
                index += 2 if pattern[index] == "\\" else 1
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(0, depth - 1)
        index += 1
    return deepest


def _first_problem(items: list[Item], flags: int) -> str | None:
    """The first large repeat (anywhere, lookarounds included) whose body is ambiguous, described."""
    for op, av, runs, item_flags in _all_items(items, flags, 1):
        if op in _REPEATS and av[1] > 1 and runs >= LARGE_REPEAT:  # type: ignore[index]
            for kind, node, following, node_flags in _reachable(list(av[2]), [], [], item_flags):  # type: ignore[index]
                if kind == "repeat" and _meets_itself_or_another(node, following, node_flags):
                    return ("nested quantifier: a repeated part contains a variable-length repeat that can match "
                            "the text around it, as in (a+)+ or (\\w+\\s?)*")
                if kind == "branch" and _branches_overlap(node[1][1], node_flags):  # type: ignore[index]
                    return ("alternatives that can match the same text under a repeat, as in (a|a)* or (a|ab)*; "
                            "make the alternatives start differently")
    return None


def _all_items(items: list[Item], flags: int, runs: int) -> Iterator[tuple[object, object, int, int]]:
    """Every item with how often it can run (its own count times those around it) and its flags."""
    for op, av in items:
        own = min(runs * av[1], sre.MAXREPEAT) if op in _REPEATS else runs  # type: ignore[index]
        yield op, av, own, flags
        for sub, sub_flags in _children(op, av, flags):
            yield from _all_items(sub, sub_flags, own)


def _children(op: object, av: object, flags: int) -> list[tuple[list[Item], int]]:
    """Every sub-pattern of one item, with the flags in force there."""
    if op in _REPEATS or op == sre.POSSESSIVE_REPEAT:
        return [(av[2], flags)]  # type: ignore[index]
    if op == sre.SUBPATTERN:
        return [(av[3], (flags | av[1]) & ~av[2])]  # type: ignore[index, operator]
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [(av[1], flags)]  # type: ignore[index]
    if op == sre.ATOMIC_GROUP:
        return [(av, flags)]  # type: ignore[list-item]
    if op == sre.BRANCH:
        return [(branch, flags) for branch in av[1]]  # type: ignore[index]
    if op == sre.GROUPREF_EXISTS:
        return [(branch, flags) for branch in av[1:] if branch is not None]  # type: ignore[index]
    return []


#: Where one item sits: (sequence, index) pairs from the outermost enclosing sequence inwards.
Context = list[tuple[list[Item], int]]


def _reachable(items: list[Item], before: Context, after: Context, flags: int
               ) -> Iterator[tuple[str, Item, Iterator[Item], int]]:
    """Repeats and alternations one iteration can backtrack into; for a repeat, the parts read after it: the
    rest of the iteration, then the next iteration up to the repeat again (lazily: most reads stop early)."""
    for index, item in enumerate(items):
        op, av = item
        preceding, following = [*before, (items, index)], [(items, index + 1), *after]
        if op in _REPEATS:
            yield "repeat", item, _flattened(_rest(following), _start(preceding)), flags
        elif op == sre.BRANCH:
            yield "branch", item, iter(()), flags
        if op in (sre.ATOMIC_GROUP, sre.POSSESSIVE_REPEAT, sre.ASSERT, sre.ASSERT_NOT):
            continue  # committed once matched, or zero-width: nothing of it is re-split
        for sub, sub_flags in _children(op, av, flags):
            yield from _reachable(list(sub), preceding, following, sub_flags)


def _rest(context: Context) -> Iterator[Item]:
    """After an item: the rest of its sequence, then of each enclosing one (innermost first)."""
    for items, start in context:
        for index in range(start, len(items)):
            yield items[index]


def _start(context: Context) -> Iterator[Item]:
    """Before an item, in reading order: the outermost sequence's start first."""
    for items, end in context:
        for index in range(end):
            yield items[index]


def _flattened(*parts: Iterator[Item]) -> Iterator[Item]:
    """The items in reading order, groups opened (a group is just its content when matching goes on)."""
    for part in parts:
        for op, av in part:
            if op == sre.SUBPATTERN:
                yield from _flattened(iter(av[3]))  # type: ignore[index]
            else:
                yield op, av


def _meets_itself_or_another(repeat: Item, following: Iterator[Item], flags: int) -> bool:
    """Whether everything read after a variable-length repeat, until it comes round again or another
    variable-length repeat sharing its characters starts, could be made of its characters. A repeat whose own
    body can match nothing (`(?:a?)?`, `(?:b*)+`) always qualifies: it matches nothing in several ways."""
    if _is_fixed_width(repeat):
        return False
    if _width(repeat[1][2])[0] == 0:  # type: ignore[index]
        return True
    chars = _chars([repeat], flags)
    if chars == 0:
        return False
    for count, item in enumerate(following):
        if count == _NEIGHBOURS_COMPARED:
            return True
        if item[0] in _REPEATS and not _is_fixed_width(item) and _chars([item], flags) & chars:
            return True
        if not _absorbable([item], chars, flags):
            return False
    return True  # read round to the repeat itself


def _is_fixed_width(item: Item) -> bool:
    low, high = _width([item])
    return low == high


def _absorbable(items: list[Item], chars: int, flags: int) -> bool:
    """Whether `items` can match a text made only of `chars` (each item may be skipped or overlap them)."""
    for op, av in items:
        if _width([(op, av)])[0] == 0:
            continue
        if op in _SINGLE_CHAR:
            if not _leaf(op, av, flags) & chars:
                return False
        elif op == sre.BRANCH:
            if not any(_absorbable(branch, chars, flags) for branch in av[1]):  # type: ignore[index]
                return False
        elif not all(_absorbable(sub, chars, sub_flags) for sub, sub_flags in _children(op, av, flags)):
            return False
    return True


def _branches_overlap(branches: list[list[Item]], flags: int) -> bool:
    starts = [_first_chars(branch, flags) if _width(branch)[0] else _ALL for branch in branches]
    for index, first in enumerate(branches):
        for other, second in enumerate(branches[index + 1:], index + 1):
            if starts[index] & starts[other] and _can_start_alike(first, second, flags):
                return True
    return False


def _can_start_alike(first: list[Item], second: list[Item], flags: int) -> bool:
    """Compare character by character while both are single characters; then compare what can come first."""
    position = 0
    while (position < len(first) and position < len(second)
           and first[position][0] in _SINGLE_CHAR and second[position][0] in _SINGLE_CHAR):
        if not _leaf(*first[position], flags) & _leaf(*second[position], flags):
            return False
        position += 1
    rest_first, rest_second = first[position:], second[position:]
    if _width(rest_first)[0] == 0 or _width(rest_second)[0] == 0:
        return True  # one can stop where the other goes on: `a|ab`
    return bool(_first_chars(rest_first, flags) & _first_chars(rest_second, flags))


def _first_chars(items: list[Item], flags: int) -> int:
    """Every character `items` can start with."""
    return _chars(items, flags, first_only=True)


def _chars(items: list[Item], flags: int, first_only: bool = False) -> int:
    """Every character `items` can consume (with `first_only`: can consume first)."""
    found = 0
    for op, av in items:
        if op in _SINGLE_CHAR:
            found |= _leaf(op, av, flags)
        elif op == sre.GROUPREF:
            found |= _ALL
        elif op not in (sre.ASSERT, sre.ASSERT_NOT):
            for sub, sub_flags in _children(op, av, flags):
                found |= _chars(sub, sub_flags, first_only)
        if first_only and _width([(op, av)])[0] > 0:
            break
    return found


def _width(items: list[Item]) -> tuple[int, int]:
    """The fewest and most characters `items` can match (MAXREPEAT for unbounded); lookarounds match none."""
    low = high = 0
    for op, av in items:
        if op in _SINGLE_CHAR:
            item_low, item_high = 1, 1
        elif op in _REPEATS or op == sre.POSSESSIVE_REPEAT:
            body_low, body_high = _width(av[2])  # type: ignore[index]
            item_low, item_high = body_low * av[0], body_high * av[1]  # type: ignore[index]
        elif op == sre.GROUPREF:
            item_low, item_high = 0, sre.MAXREPEAT
        elif op in (sre.SUBPATTERN, sre.ATOMIC_GROUP, sre.BRANCH, sre.GROUPREF_EXISTS):
            widths = [_width(sub) for sub, _ in _children(op, av, 0)]
            if op == sre.GROUPREF_EXISTS and len(widths) == 1:
                widths.append((0, 0))  # no "no" branch: matches nothing
            item_low = min(width[0] for width in widths) if op in (sre.BRANCH, sre.GROUPREF_EXISTS) else widths[0][0]
            item_high = max(width[1] for width in widths)
        else:
            item_low, item_high = 0, 0
        low, high = low + item_low, min(high + item_high, sre.MAXREPEAT)
    return low, high


def _leaf(op: object, av: object, flags: int) -> int:
    """The sample characters one single-character item matches, as a bit set over _ALPHABET."""
    return _leaf_mask(op, tuple(av) if isinstance(av, list) else av, flags & _CHAR_FLAGS)


@functools.lru_cache(maxsize=4096)
def _leaf_mask(op: object, av: object, flags: int) -> int:
    if op == sre.ANY:
        return _ALL if flags & sre.SRE_FLAG_DOTALL else _mask(lambda ch: ch != "\n")
    if op == sre.LITERAL:
        return _mask(lambda ch: _same(ch, chr(av), flags))  # type: ignore[arg-type]
    if op == sre.NOT_LITERAL:
        return _ALL & ~_mask(lambda ch: _same(ch, chr(av), flags))  # type: ignore[arg-type]
    members: list[Item] = av  # type: ignore[assignment]
    negate = bool(members) and members[0][0] == sre.NEGATE
    found = _mask(lambda ch: any(_in_set(ch, member, flags) for member in members))
    return _ALL & ~found if negate else found


def _in_set(ch: str, member: Item, flags: int) -> bool:
    op, av = member
    variants = {ch}
    if flags & sre.SRE_FLAG_IGNORECASE:
        variants |= {case for case in (ch.lower(), ch.upper()) if len(case) == 1}  # "ß".upper() is "SS"
    if op == sre.LITERAL:
        return any(_same(variant, chr(av), flags) for variant in variants)  # type: ignore[arg-type]
    if op == sre.RANGE:
        low, high = av  # type: ignore[misc]
        return any(low <= ord(variant) <= high for variant in variants)
    if op == sre.CATEGORY:
        return _category(ch, av, flags)
    return False  # NEGATE, handled by the caller


def _category(ch: str, category: object, flags: int) -> bool:
    if flags & sre.SRE_FLAG_ASCII and not ch.isascii():
        return category in _NEGATED_CATEGORIES
    if category in _NEGATED_CATEGORIES:
        return not _CATEGORIES[_NEGATED_CATEGORIES[category]](ch)
    test = _CATEGORIES.get(category)
    return test(ch) if test is not None else True


def _same(ch: str, literal: str, flags: int) -> bool:
    if flags & sre.SRE_FLAG_IGNORECASE:
        return ch.lower() == literal.lower() or ch.upper() == literal.upper()
    return ch == literal


def _mask(test: object) -> int:
    mask = 0
    for index, ch in enumerate(_ALPHABET):
        if test(ch):  # type: ignore[operator]
            mask |= 1 << index
    return mask
