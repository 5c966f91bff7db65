"""µs per `Screener.screen`, with the defaults and with ~20 signatures, for requests that pass and that are blocked.

The request is the one Envoy sends through the shipped bootstrap (pipeline_micro.py) for `GET /api/orders` with a
reader token, plus browser-like headers (accept-language, cookie, referer, sec-fetch-*); a fresh `Request` view
per call as in a Check, its own cost subtracted. The signatures are typical WAF-style rules over the path, the
query and every header value, so the "20 signatures" rows are close to the worst a clean request pays.
"""

import sys
import tempfile
from pathlib import Path

from pipeline_micro import envoy_check_request, microseconds_per_call, repeated

from extauth.documents.loader import LoadedDocument
from extauth.documents.screening import ScreeningDocument
from extauth.documents.yamlsource import parse_documents, validate
from extauth.request import Request
from extauth.screening.compiler import compile_screening
from extauth.screening.screener import Screener

#: A whole Check through the pipeline costs about this much (pipeline_micro.py), for the share column.
CHECK_US = 450
TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImRldi0xIiwidHlwIjoiSldUIn0." + "eyJzdWIiOiJhbGljZSJ9" * 16 + "." + "s" * 342
BROWSER = {
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "accept-language": "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
    "accept-encoding": "gzip, deflate, br, zstd",
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "cookie": "session=2f1c9a7e4b; theme=dark; _ga=GA1.1.1234567890.1732464000",
    "referer": "https://shop.example/orders?page=2",
    "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty",
}
SIGNATURES = [
    ("sqli-union", ["query"], r"(?i)union(?:\s|\+|%20)+(?:all(?:\s|\+|%20)+)?select"),
    ("sqli-tautology", ["query"], r"(?i)'\s*or\s*'?\d+'?\s*=\s*'?\d+"),
    ("sqli-comment", ["query"], r"(?:--|#|/\*)\s*$"),
    ("sqli-sleep", ["query", "headers"], r"(?i)\b(?:sleep|benchmark|pg_sleep)\s*\("),
    ("xss-script", ["query", "headers"], r"(?i)<\s*script\b"),
    ("xss-handler", ["query"], r"(?i)\bon(?:error|load|mouseover)\s*="),
    ("xss-js-uri", ["query"], r"(?i)javascript\s*:"),
    ("log4shell", ["path", "query", "headers"], r"(?i)\$\{\s*(?:jndi|env|sys|lower|upper)\s*:"),
    ("shellshock", ["headers"], r"\(\)\s*\{\s*:;\s*\}\s*;"),
    ("php-wrapper", ["query"], r"(?i)\b(?:php|phar|zip|data|expect)://"),
    ("ssrf-metadata", ["query"], r"169\.254\.169\.254|metadata\.google\.internal"),
    ("dotfiles", ["path"], r"/\.(?:git|svn|env|htaccess|aws)(?:/|$)"),
    ("backup-files", ["path"], r"\.(?:bak|old|swp|sql|tar\.gz)$"),
    ("admin-probes", ["path"], r"^/(?:wp-admin|wp-login\.php|phpmyadmin|cgi-bin)/?"),
    ("scanner-ua", ["headers"], r"(?i)\b(?:sqlmap|nikto|nmap|masscan|zgrab)\b"),
    ("template-injection", ["query"], r"\{\{.*\}\}|\{%.*%\}"),
    ("cmd-injection", ["query"], r"(?:;|\|\||&&)\s*(?:cat|id|uname|wget|curl)\b"),
    ("xxe", ["headers"], r"(?i)<!(?:DOCTYPE|ENTITY)"),
    ("empty-ua", ["headers"], r"^\s*$|^-$"),
    ("crlf-encoded", ["query"], r"(?i)%0[ad]"),
]
HOST_ONLY = {"empty-ua": "user-agent"}


def signatures_document() -> str:
    lines = ["apiVersion: extauth/v1", "kind: Screening", "metadata: {name: waf}", "signatures:"]
    for name, targets, pattern in SIGNATURES:
        header = f", header: '{HOST_ONLY[name]}'" if name in HOST_ONLY else ""
        quoted = pattern.replace("'", "''")
        lines.append(f"  - {{name: {name}, targets: [{', '.join(targets)}]{header}, pattern: '{quoted}'}}")
    return "\n".join(lines) + "\n"


def screener(text: str | None) -> Screener:
    if text is None:
        return compile_screening(())
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "screening.yaml"
        documents = [LoadedDocument(path, validate(ScreeningDocument, data, lines, path), lines)
                     for data, lines in parse_documents(path, text)]
    return compile_screening(documents)


def main() -> int:
    with_defaults, with_signatures = screener(None), screener(signatures_document())
    cases = [
        ("GET /api/orders, curl-like, JWT", "/api/orders", {}),
        ("GET /api/orders?..., browser headers, JWT", "/api/orders?page=2&sort=created%20desc&q=caf%C3%A9",
         BROWSER),
        ("blocked: ?file=%252e%252e%252fetc%252fpasswd", "/download?file=%252e%252e%252fetc%252fpasswd", BROWSER),
    ]
    print(f"Screener.screen, µs per call, Request view excluded (Python {sys.version.split()[0]}, "
          f"{len(with_signatures.signatures)} signatures)\n")
    print(f"| {'request':<46} | defaults µs | % of a Check | 20 signatures µs | % of a Check | decision")
    print(f"|{'-' * 48}|------------:|-------------:|-----------------:|-------------:|---")
    for label, path, extra in cases:
        check = envoy_check_request(path, TOKEN)
        check.attributes.request.http.headers.update(extra)
        outcome = with_signatures.screen(Request(check))
        view_us = microseconds_per_call(repeated(lambda check=check: Request(check)))
        figures = []
        for compiled in (with_defaults, with_signatures):
            screen = compiled.screen
            figures.append(microseconds_per_call(repeated(lambda check=check, screen=screen:
                                                          screen(Request(check)))) - view_us)
        verdict = "pass" if outcome is None else f"{outcome.status} {outcome.rule}"
        print(f"| {label:<46} | {figures[0]:11.2f} | {100 * figures[0] / CHECK_US:11.1f}% | "
              f"{figures[1]:16.2f} | {100 * figures[1] / CHECK_US:11.1f}% | {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
