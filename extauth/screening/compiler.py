"""Screening documents compiled once into a `Screener` (screener.py): the merged limits and blocks, and the
signatures with their regexes checked for safety; every mistake a file:line error, all reported at once."""

import re
from collections.abc import Sequence

from extauth.documents.errors import ConfigError, ConfigIssue
from extauth.documents.loader import LoadedDocument
from extauth.documents.regex_safety import UnsafeRegexError, compile_safe
from extauth.documents.screening import DEFAULT_METHODS, Blocks, Limits, ScreeningDocument, Signature
from extauth.screening.screener import CompiledSignature, Screener
from extauth.screening.waf import WafEngine, compile_waf

#: A signature that matches all of these (`.*`, `a*`, `(?:)`) would block every request: a load error.
_HARMLESS = ("x", "/", "0")


def compile_screening(documents: Sequence[LoadedDocument[ScreeningDocument]]) -> Screener:
    """Merge every Screening document into one Screener; defaults where no document sets a part.

    At most one document may set each of `methods`, `limits`, `blocks` and `waf`; signatures from every document
    apply, their names unique across all of them. Every problem is reported (file:line: field: message).
    """
    issues: list[ConfigIssue] = []
    owners: dict[str, LoadedDocument[ScreeningDocument]] = {}
    signatures: list[CompiledSignature] = []
    names: dict[str, str] = {}  # signature name -> file:line where it was first defined
    for loaded in documents:
        document = loaded.document
        for part in ("methods", "limits", "blocks", "waf"):
            if getattr(document, part) is None:
                continue
            first = owners.setdefault(part, loaded)
            if first is not loaded:
                issues.append(loaded.issue((part,), part, f"already set in {_where(first, (part,))}; "
                                           f"only one Screening document may set {part}"))
        for index, signature in enumerate(document.signatures):
            field = f"signatures[{index}]"
            at = ("signatures", index)
            if signature.name in names:
                issues.append(loaded.issue((*at, "name"), f"{field}.name", f"signature {signature.name!r} "
                                           f"already defined in {names[signature.name]}"))
            else:
                names[signature.name] = _where(loaded, (*at, "name"))
            compiled = _compile_signature(loaded, index, signature, issues)
            if compiled is not None:
                signatures.append(compiled)
    waf: WafEngine | None = None
    if "waf" in owners and not issues:  # parsing the rules is the slow part: only for an otherwise valid policy
        waf = compile_waf(owners["waf"], issues)
    if issues:
        raise ConfigError(issues)

    def chosen(part: str, default: object) -> object:
        return getattr(owners[part].document, part) if part in owners else default

    return Screener(
        methods=chosen("methods", DEFAULT_METHODS),  # type: ignore[arg-type]
        limits=chosen("limits", Limits()),  # type: ignore[arg-type]
        blocks=chosen("blocks", Blocks()),  # type: ignore[arg-type]
        signatures=signatures,
        waf=waf,
    )


def _compile_signature(loaded: LoadedDocument[ScreeningDocument], index: int, signature: Signature,
                       issues: list[ConfigIssue]) -> CompiledSignature | None:
    field = f"signatures[{index}]"
    at = ("signatures", index)
    targets = set(signature.targets)
    if signature.header is not None and "headers" not in targets:
        issues.append(loaded.issue((*at, "header"), f"{field}.header",
                                   "applies only with target 'headers'; add it to targets or remove header"))
    try:
        pattern = compile_safe(signature.pattern)
    except re.error as error:
        issues.append(loaded.issue((*at, "pattern"), f"{field}.pattern", f"invalid regular expression: {error}"))
        return None
    except UnsafeRegexError as error:
        issues.append(loaded.issue((*at, "pattern"), f"{field}.pattern", str(error)))
        return None
    if all(pattern.search(probe) is not None for probe in _HARMLESS):
        issues.append(loaded.issue((*at, "pattern"), f"{field}.pattern",
                                   "matches any text (even 'x', '/' and '0'), so it would block every request"))
        return None
    return CompiledSignature(f"{loaded.document.metadata.name}/{signature.name}", pattern, "path" in targets,
                             "query" in targets, "headers" in targets, signature.header)


def _where(loaded: LoadedDocument[ScreeningDocument], at: tuple[str | int, ...]) -> str:
    issue = loaded.issue(at, "", "")
    return f"{issue.file}:{issue.line}" if issue.line else str(issue.file)
