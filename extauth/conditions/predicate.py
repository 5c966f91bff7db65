"""One compiled condition part (a `Predicate`, not to be confused with the Check RPC or a `LimitCheck`): the unit
every condition compiles to, for rules, limit overrides and CEL."""

from collections.abc import Callable

from extauth.conditions.params import Params
from extauth.identity.principal import Principal
from extauth.request import Request

Test = Callable[[Request, Principal, Params], bool]


class Predicate:
    """One condition part: `test` decides, `why` explains a failure in words, `mixed` (value checks of allow
    rules only) says whether a failing `test` failed because the values disagree rather than all not matching."""

    __slots__ = ("mixed", "name", "test", "why")

    def __init__(self, name: str, test: Test, why: Callable[[Request, Principal, Params], str],
                 mixed: Test | None = None) -> None:
        self.name = name
        self.test = test
        self.why = why
        self.mixed = mixed
