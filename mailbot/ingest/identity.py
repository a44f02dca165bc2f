"""A message's identity beyond its bytes, so a server migration is re-matched, not re-drafted.

A migration (or a rebuilt index) changes UIDVALIDITY and usually rewrites the bytes too:
headers added, lines re-folded, bodies re-encoded (quoted-printable to base64, CRLF to LF).
What survives is the Message-ID, the Date and the sender, and the decoded text of the body,
which `body_hash` reads with whitespace normalised.
"""

from __future__ import annotations

import email
import hashlib
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime

_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]*>")


def body_hash(raw: bytes) -> str:
    """SHA-256 of the message's decoded text parts, whitespace collapsed, case kept."""
    message = email.message_from_bytes(raw, policy=policy.default)
    texts = []
    for part in message.walk() if message.is_multipart() else [message]:
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if part.get_content_disposition() == "attachment":
            continue
        try:
            content = part.get_content() if isinstance(part, EmailMessage) else ""
        except (LookupError, ValueError, AssertionError):
            payload = part.get_payload(decode=True)
            content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        if part.get_content_subtype() == "html":
            content = _TAG.sub(" ", str(content))
        texts.append(str(content))
    normalised = _SPACE.sub(" ", " ".join(texts)).strip()
    return hashlib.sha256(normalised.encode("utf-8", "replace")).hexdigest()


def header_date(value: str | None) -> datetime | None:
    """The Date header as an aware UTC datetime (None when missing or unreadable)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def sender_address(value: str | None) -> str:
    """The bare address of a From header or a stored sender, lower case ("" if none)."""
    return parseaddr(value or "")[1].strip().lower()
