"""Finding canary values in bytes, in every form a careless code path could write them.

A value that leaks rarely leaks verbatim only: a log line URL-encodes a query string,
``json.dumps`` escapes ``é`` as ``\\u00e9``, a template HTML-escapes an apostrophe, a
search normaliser folds case and accents, Windows-minded code writes UTF-16, and a
sealed field that was not sealed after all is still base64 in a JSON document.
``encodings`` lists those forms; ``find`` looks for all of them, and ``scan_tree``
reads every file under a directory.  Mail is scanned raw and decoded (quoted-printable
or base64 bodies, RFC 2047 headers), because a non-ASCII body is never sent as is.
"""

from __future__ import annotations

import base64
import html
import json
import re
import unicodedata
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote, quote_plus

MIN_BASE64 = 12  # characters of a base64 run that must match (shorter runs occur by chance)


def fold(value: str) -> str:
    """Case and accents folded, as the blind-index normaliser does."""
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _base64_runs(raw: bytes) -> list[tuple[str, bytes]]:
    """The stable middle of ``raw``'s base64 at each of the three byte alignments."""
    out = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        start = 4 if offset else 0  # the group holding the filler bytes differs
        end = len(encoded) - 4 if (offset + len(raw)) % 3 else len(encoded)  # padded tail
        run = encoded[start:end]
        if len(run) >= MIN_BASE64:
            out.append((f"base64+{offset}", run))
            urlsafe = run.replace(b"+", b"-").replace(b"/", b"_")
            if urlsafe != run:
                out.append((f"base64url+{offset}", urlsafe))
    return out


def encodings(value: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of every form of ``value`` that the scans look for."""
    texts = {
        "utf-8": value,
        "lower": value.lower(),
        "upper": value.upper(),
        "folded": fold(value),
        "json": json.dumps(value)[1:-1],
        "html": html.escape(value),
        "url": quote(value, safe=""),
        "url-plus": quote_plus(value),
        "url-lower-hex": re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(value)),
        "folded-url": quote(fold(value), safe=""),
    }
    forms: dict[bytes, str] = {}
    for name, text in texts.items():
        forms.setdefault(text.encode(), name)
    for name, codec in (("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be")):
        forms.setdefault(value.encode(codec), name)
        forms.setdefault(fold(value).encode(codec), f"folded-{name}")
    # Base64 of the value as it would sit inside a document: raw, folded, JSON-escaped
    # (a sealed JSON field that was not sealed after all).
    for prefix, source in (("", value), ("folded-", fold(value)), ("json-", texts["json"])):
        for name, run in _base64_runs(source.encode()):
            forms.setdefault(run, prefix + name)
    return [(name, raw) for raw, name in forms.items()]


def find(data: bytes, canaries: dict[str, str]) -> list[str]:
    """``name (form)`` of every canary found in ``data``."""
    hits = []
    for name, value in canaries.items():
        for form, raw in encodings(value):
            if raw in data:
                hits.append(f"{name} ({form})")
                break
    return hits


def scan_tree(root: Path, canaries: dict[str, str]) -> list[str]:
    """``path: canary (form)`` for every canary in every file under ``root``."""
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        for hit in find(path.read_bytes(), canaries):
            hits.append(f"{path.relative_to(root)}: {hit}")
    return hits


def mail_text(raw: bytes) -> bytes:
    """The raw message followed by its decoded headers and body parts."""
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    parts = [raw]
    parts += [str(v).encode() for v in message.values()]
    for part in message.walk():
        if part.get_content_maintype() == "multipart":
            continue
        payload = part.get_content()
        parts.append(payload if isinstance(payload, bytes) else str(payload).encode())
    return b"\n".join(parts)
