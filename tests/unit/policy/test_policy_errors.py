"""One broken policy per error message, each with file, line and field."""

from pathlib import Path

import pytest

from extauth.config import ConfigError
from extauth.documents.loader import load_policies

HEAD = "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\n"
ROUTE = HEAD + "routes:\n  - name: r\n"
WHEN = ROUTE + "    rules:\n      - name: x\n        when:\n"
CASES = {
    "wrong apiVersion": (
        "apiVersion: extauth/v2\nkind: Policy\nmetadata: {name: p}\n",
        ["1: apiVersion: Input should be 'extauth/v1'"],
    ),
    "path without slash": (
        HEAD + "routes:\n  - name: r\n    match: {path: {prefix: api}}\n    public: true\n",
        ["6: routes[0].match.path: paths start with '/'"],
    ),
    "route with neither rules nor public": (
        HEAD + "routes:\n  - name: r\n    match: {path: {prefix: /api}}\n",
        ["5: routes[0]: a route needs rules, or `public: true`; unmatched requests are denied anyway"],
    ),
    "undefined role in rule": (
        HEAD + "routes:\n  - name: r\n    rules:\n      - name: x\n        when: {roles: [ghost]}\n",
        ["8: routes[0].rules[0].when.roles: undefined role 'ghost' (declare it under roles:)"],
    ),
    "inherits undefined role": (
        HEAD + "roles:\n  admin: [root]\n",
        ["5: roles.admin: inherits undefined role 'root'"],
    ),
    "inheritance cycle": (
        HEAD + "roles:\n  a: [b]\n  b: [a]\n",
        ["5: roles.a: inheritance cycle", "6: roles.b: inheritance cycle"],
    ),
    "unknown condition": (
        HEAD + "routes:\n  - name: r\n    rules:\n      - name: x\n        when: {colour: blue}\n",
        ["8: routes[0].rules[0].when.colour: unknown field"],
    ),
    "duplicate route name": (
        HEAD + "routes:\n  - {name: r, public: true}\n  - {name: r, public: true}\n",
        ["6: routes[1].name: route 'r' already defined in {path}"],
    ),
    'two path kinds': (
        ROUTE + '    match: {path: {prefix: /a, template: /a}}\n    public: true\n',
        ["6: routes[0].match.path: set exactly one of exact, prefix, template, regex (got ['prefix', 'template'])"],
    ),
    'bad regex': (
        ROUTE + "    match:\n      path: {regex: '/a('}\n    public: true\n",
        ['7: routes[0].match.path.regex: invalid regular expression: missing ), unterminated subpattern at position 2'],
    ),
    'template segment': (
        ROUTE + "    match:\n      path: {template: '/a/x{id}'}\n    public: true\n",
        ["7: routes[0].match.path.template: segment 'x{id}' must be literal text or one {name} (letters, digits, '_')"],
    ),
    'duplicate template parameter': (
        ROUTE + "    match:\n      path: {template: '/a/{id}/b/{id}'}\n    public: true\n",
        ["7: routes[0].match.path.template: duplicate parameter 'id'"],
    ),
    'rest not last': (
        ROUTE + "    match:\n      path: {template: '/a/{rest...}/b'}\n    public: true\n",
        ['7: routes[0].match.path.template: {rest...} may only be the last segment'],
    ),
    'empty template segment': (
        ROUTE + "    match:\n      path: {template: '/a//b'}\n    public: true\n",
        ["7: routes[0].match.path.template: empty path segment ('//')"],
    ),
    'bad host': (
        ROUTE + "    match:\n      hosts: ['api.*.com']\n    public: true\n",
        ["7: routes[0].match.hosts[0]: 'api.*.com' is not a host name or '*.' followed by one"],
    ),
    'bad cidr': (
        WHEN + '          source_cidrs: [10.0.0.1/8]\n',
        ['9: routes[0].rules[0].when.source_cidrs[0]: invalid CIDR: 10.0.0.1/8 has host bits set'],
    ),
    'bad peer wildcard': (
        WHEN + "          peer: ['spiffe://corp/*/api']\n",
        ["9: routes[0].rules[0].when.peer[0]: 'spiffe://corp/*/api' is not a SPIFFE ID (spiffe://<trust domain>/"
         "<path>, lower-case trust domain, segments of letters, digits, '.', '_', '-') nor one followed by '/*'"],
    ),
    'peer not in its canonical spelling': (
        WHEN + "          peer: ['spiffe://corp/ns/shop/../admin']\n",
        ["9: routes[0].rules[0].when.peer[0]: 'spiffe://corp/ns/shop/../admin' is not a SPIFFE ID (spiffe://<trust "
         "domain>/<path>, lower-case trust domain, segments of letters, digits, '.', '_', '-') nor one followed by "
         "'/*'"],
    ),
    'bad header regex': (
        WHEN + "          headers: {x-a: {regex: '[a'}}\n",
        ['9: routes[0].rules[0].when.headers.x-a.regex: invalid regular expression: unterminated character '
         'set at position 0'],
    ),
    'path regex with a nested quantifier': (
        ROUTE + "    match:\n      path: {regex: '/a/(\\w+\\s?)*'}\n    public: true\n",
        ['7: routes[0].match.path.regex: may backtrack catastrophically: nested quantifier: a repeated part '
         'contains a variable-length repeat that can match the text around it, as in (a+)+ or (\\w+\\s?)*'],
    ),
    'query regex with overlapping alternatives': (
        WHEN + "          query: {q: {regex: '(a|ab)*'}}\n",
        ['9: routes[0].rules[0].when.query.q.regex: may backtrack catastrophically: alternatives that can match '
         'the same text under a repeat, as in (a|a)* or (a|ab)*; make the alternatives start differently'],
    ),
    'header regex nesting groups too deeply': (
        WHEN + "          headers: {x-a: {regex: '" + "(" * 1000 + ")" * 1000 + "'}}\n",
        ['9: routes[0].rules[0].when.headers.x-a.regex: groups nested 1000 deep; the limit is 32'],
    ),
    'two value kinds': (
        WHEN + '          headers: {x-a: {present: true, regex: a}}\n',
        ["9: routes[0].rules[0].when.headers.x-a: give a value, a list of values, {present: bool} or {regex: "
         "...} (got ['present', 'regex'])"],
    ),
    'unknown time zone': (
        WHEN + "          time: {timezone: Europe/Berln, between: ['08:00', '18:00']}\n",
        ["9: routes[0].rules[0].when.time.timezone: unknown time zone 'Europe/Berln' (an IANA name such as "
         "Europe/Berlin)"],
    ),
    'bad time of day': (
        WHEN + "          time:\n            timezone: UTC\n            between: ['8am', '18:00']\n",
        ["11: routes[0].rules[0].when.time.between[0]: '8am' is not a time of day (HH:MM, 00:00 to 24:00)"],
    ),
    'unquoted time': (
        WHEN + "          time:\n            timezone: UTC\n            between: ['08:00', 18:00]\n",
        ['11: routes[0].rules[0].when.time.between[1]: write times in quotes ("18:00"): unquoted, YAML reads '
         'them as the number 1080'],
    ),
    'empty time window': (
        WHEN + '          time: {timezone: UTC}\n',
        ['9: routes[0].rules[0].when.time: give weekdays, between, or both'],
    ),
    'bad weekday': (
        WHEN + '          time: {timezone: UTC, weekdays: [monday]}\n',
        ["9: routes[0].rules[0].when.time.weekdays[0]: Input should be 'mon', 'tue', 'wed', 'thu', 'fri', "
         "'sat' or 'sun'"],
    ),
    'param not in route': (
        ROUTE + "    match: {path: {prefix: /t/}}\n    rules:\n      - name: x\n        when:\n"
                "          params_match_claims: {tenant: tenant}\n",
        ["10: routes[0].rules[0].when.params_match_claims.tenant: the route's path has no parameter 'tenant' "
         "(it has none)"],
    ),
    'header param not in route': (
        ROUTE + "    match: {path: {template: '/t/{id}'}}\n    rules:\n      - name: x\n        headers:\n"
                "          x-tenant: '{tenant}'\n",
        ["10: routes[0].rules[0].headers.x-tenant: the route's path has no parameter 'tenant' (it has: id)"],
    ),
    'bad header placeholder': (
        ROUTE + "    rules:\n      - name: x\n        headers:\n          x-a: 'tenant {a b}'\n",
        ['9: routes[0].rules[0].headers.x-a: placeholder {a b} is neither {param} nor {claims.NAME}'],
    ),
    'authorization header': (
        ROUTE + '    rules:\n      - name: x\n        headers:\n          Authorization: x\n',
        ['9: routes[0].rules[0].headers.Authorization: cannot be set: extauth removes credentials before the upstream'],
    ),
    'pseudo header': (
        ROUTE + "    rules:\n      - name: x\n        headers:\n          ':path': /x\n",
        ['9: routes[0].rules[0].headers.:path: pseudo-headers cannot be set'],
    ),
    'deny rule with headers': (
        ROUTE + '    rules:\n      - name: x\n        effect: deny\n        headers: {x-a: b}\n',
        ['7: routes[0].rules[0]: headers are added on allow; a deny rule cannot set them'],
    ),
    'unknown kind': (
        'apiVersion: extauth/v1\nkind: PolicyTest\nmetadata: {name: p}\n',
        ["2: kind: unknown kind 'PolicyTest'; known kinds: Policy, Screening"],
    ),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_policy_error_names_file_line_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    """A broken policy file is rejected with every problem as `file:line: field: message`."""
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_policies(path)
    assert str(raised.value).splitlines() == [f"{path}:{line}".replace("{path}", str(path)) for line in expected]


def test_directory_without_policies_is_an_error(tmp_path: Path) -> None:
    """An empty policy directory is an error rather than a silent deny-everything."""
    with pytest.raises(ConfigError, match="no policy files"):
        load_policies(tmp_path)


def test_errors_in_several_files_are_all_reported(tmp_path: Path) -> None:
    """Each broken file in a policy directory contributes its own error."""
    (tmp_path / "a.yaml").write_text("apiVersion: extauth/v0\nkind: Policy\nmetadata: {name: a}\n")
    (tmp_path / "b.yaml").write_text("kind: Policy\nmetadata: {name: b}\n")
    with pytest.raises(ConfigError) as raised:
        load_policies(tmp_path)
    assert [issue.file.name for issue in raised.value.issues] == ["a.yaml", "b.yaml"]
