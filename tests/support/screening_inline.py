"""Screening documents written inline in tests, loaded the way the policy loader loads them (real lines)."""

from collections.abc import Mapping
from pathlib import Path

from extauth.decision import Decision
from extauth.documents.loader import LoadedDocument
from extauth.documents.screening import ScreeningDocument
from extauth.documents.yamlsource import parse_documents, validate
from extauth.request import Request
from extauth.screening.compiler import compile_screening
from extauth.screening.screener import Screener
from extauth.tools.synthetic import check_request

HEAD = "apiVersion: extauth/v1\nkind: Screening\n"
#: What a browser sends through Envoy, with a bearer token: must pass the defaults.
JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImRldi0xIiwidHlwIjoiSldUIn0."
       "eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoiYWxpY2UiLCJyb2xlcyI6WyJyZWFkZXIiXX0."
       "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk_-zW9ykS4Ah3DKDXFz9Ys8OzmOvSFYdNhzFcIMtfVqQ")
BROWSER = {
    "authorization": f"Bearer {JWT}",
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "accept-language": "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
    "accept-encoding": "gzip, deflate, br, zstd",
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "cookie": "session=2f1c9a7e4b; theme=dark; _ga=GA1.1.1234567890.1732464000",
    "referer": "https://shop.example/orders?page=2&q=caf%C3%A9",
    "if-none-match": 'W/"5e15153d-120f"',
    "sec-ch-ua": '"Chromium";v="131", "Not_A Brand";v="24"',
    "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty",
    "x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https",
}


def loaded(text: str, file: Path = Path("screening.yaml")) -> list[LoadedDocument[ScreeningDocument]]:
    """Every document in `text`, validated with its line map, as `load_policies` builds them."""
    return [LoadedDocument(file, validate(ScreeningDocument, data, lines, file), lines)
            for data, lines in parse_documents(file, text)]


def screener_for(*texts: str) -> Screener:
    """A Screener from one or more files (`a.yaml`, `b.yaml`, ... in order)."""
    documents = [doc for index, text in enumerate(texts) for doc in loaded(text, Path(f"{'abcdef'[index]}.yaml"))]
    return compile_screening(documents)


def screen(screener: Screener, path: str = "/", method: str = "GET",
           headers: Mapping[str, str] | None = None) -> Decision | None:
    return screener.screen(Request(check_request(path, method, headers=headers)))
