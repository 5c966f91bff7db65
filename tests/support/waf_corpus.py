"""Benign API traffic for the WAF's false-positive test (docs/waf.md): generated, reproducible, realistic.

Each request is what an ordinary client of a JSON API sends: UUIDs, dates, search queries with quotes and
punctuation, file names, JSON and form bodies, JWTs in headers. None of it is an attack, so the Core Rule Set at
paranoia level 1 must let every one through.
"""

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote, urlencode

SEARCHES = [
    "O'Brien", "Ben & Jerry's", "what's new?", "C++ vs. C#", "rock 'n' roll", "\"exact phrase\"", "50% off",
    "size: 10-12", "e-mail@example.com", "Q3 2024 report", "naïve café", "São Paulo", "it's 5 o'clock",
    "price < 100", "3.14159", "#hashtag", "hello, world!", "1/2 cup", "Müller-Lüdenscheidt", "don't stop",
    "black & white", "top-10 (2023)", "A+B", "tea; coffee", "R&D budget", "x = y", "user's guide",
"¿dónde está?", "日本語", "emoji 🎉", "smith, john", "ACME Corp.", "v2.1.0",
    "New York, NY", "re: meeting notes", "100 USD", "foo_bar-baz", "see you @ 5pm",
]
FILE_NAMES = [
    "report-2024 (final).pdf", "IMG_2041.JPG", "résumé.docx", "data_export.csv", "notes v2.txt", "a.b.c.json",
    "Q1 budget – draft.xlsx", "photo (1).png", "backup-2023-11-05.tar.gz", "readme.md", "invoice#1042.pdf",
]
#: Benign text the Core Rule Set flags at paranoia level 1, found while building this corpus (so kept out of it):
#: `"x" and 'y'` reads as SQL to libinjection (942100), and `top [` as a JavaScript global (941370, "stop [draft]").
#: docs/waf.md shows the tuning for them; tests/unit/screening/test_waf.py proves the exclusions work.
KNOWN_FALSE_POSITIVES = {942100: "\"quoted\" and 'single' – india, 100 USD", 941370: "don't stop [draft] proposal"}
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"]
USER_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Safari/605.1.15",
    "okhttp/4.12.0", "python-requests/2.32.3", "curl/8.5.0", "Go-http-client/2.0", "axios/1.7.2",
]


@dataclass(frozen=True)
class BenignRequest:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def _when(rng: random.Random) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 86400 * 700))


def _query(rng: random.Random) -> dict[str, str]:
    kind = rng.randrange(6)
    if kind == 0:
        return {"q": rng.choice(SEARCHES), "page": str(rng.randrange(1, 50))}
    if kind == 1:
        start = _when(rng).date()
        return {"from": start.isoformat(), "to": (start + timedelta(days=rng.randrange(1, 90))).isoformat()}
    if kind == 2:
        return {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "include": "items,customer"}
    if kind == 3:
        return {"file": rng.choice(FILE_NAMES), "download": rng.choice(["true", "false"])}
    if kind == 4:
        return {"sort": rng.choice(["-created_at", "name", "price,-rating"]), "limit": str(rng.randrange(1, 200)),
                "since": _when(rng).isoformat().replace("+00:00", "Z")}
    return {"tags": ",".join(rng.sample(WORDS, 3)), "lang": rng.choice(["en-US", "de", "fr-CA", "pt_BR"])}


def _document(rng: random.Random) -> dict[str, object]:
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "name": rng.choice(SEARCHES),
        "created_at": _when(rng).isoformat(),
        "due": date(2025, rng.randrange(1, 13), rng.randrange(1, 29)).isoformat(),
        "attachment": rng.choice(FILE_NAMES),
        "amount": round(rng.uniform(0, 10_000), 2),
        "tags": rng.sample(WORDS, rng.randrange(0, 4)),
        "note": f"{rng.choice(SEARCHES)} – {rng.choice(WORDS)}, {rng.choice(SEARCHES)}",
        "nested": {"enabled": rng.random() < 0.5, "count": rng.randrange(0, 1000), "ratio": rng.random()},
    }


def benign_requests(count: int, tokens: list[str], seed: int = 14) -> list[BenignRequest]:
    """`count` requests to /public/ (GETs with queries, POSTs with JSON and form bodies), a bearer token from
    `tokens` on about half of them."""
    rng = random.Random(seed)
    requests: list[BenignRequest] = []
    for index in range(count):
        headers = {"user-agent": rng.choice(USER_AGENTS), "accept": "application/json",
                   "accept-language": rng.choice(["en-US,en;q=0.9", "de-DE,de;q=0.8,en;q=0.5", "fr"]),
                   "x-correlation-id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        if tokens and rng.random() < 0.5:
            headers["authorization"] = f"Bearer {rng.choice(tokens)}"
        resource = f"/public/{rng.choice(WORDS)}/{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        kind = index % 3
        if kind == 0:
            requests.append(BenignRequest("GET", f"{resource}?{urlencode(_query(rng), quote_via=quote)}", headers))
        elif kind == 1:
            body = json.dumps(_document(rng), ensure_ascii=rng.random() < 0.5).encode()
            requests.append(BenignRequest(rng.choice(["POST", "PUT", "PATCH"]), resource,
                                          {**headers, "content-type": "application/json"}, body))
        else:
            form = {"name": rng.choice(SEARCHES), "email": f"{rng.choice(WORDS)}.{rng.choice(WORDS)}@example.org",
                    "file": rng.choice(FILE_NAMES), "date": _when(rng).date().isoformat(),
                    "comment": f"{rng.choice(SEARCHES)} {rng.choice(SEARCHES)}"}
            requests.append(BenignRequest("POST", resource,
                                          {**headers, "content-type": "application/x-www-form-urlencoded"},
                                          urlencode(form).encode()))
    return requests
