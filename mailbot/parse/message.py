"""The parsed form of one inbound email: what every later stage reads instead of raw bytes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

BodySource = Literal["plain", "html", "none"]


def join_text(*parts: str | None) -> str:
    """Non-empty parts of an email's text, stripped, one blank line apart."""
    return "\n\n".join(part.strip() for part in parts if part and part.strip())


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox from an address header; `name` is decoded and may be empty."""

    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email

    def to_json(self) -> dict[str, str]:
        """A JSON-able dict: `{"name": ..., "email": ...}`."""
        return {"name": self.name, "email": self.email}


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attached file, described but not kept: the bytes stay in the raw message."""

    filename: str | None
    content_type: str
    size: int  # bytes after transfer decoding (base64, quoted-printable)
    sha256: str  # of the decoded bytes

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the four fields."""
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One customer email after parsing; immutable and free of raw payloads.

    `text` is the whole body as text; `new_text` is only what the sender wrote this time,
    with quoted history (`quoted`) and signature (`signature`) split off.
    """

    sha256: str  # of the raw bytes, the ledger's backstop identity
    size: int  # of the raw bytes
    message_id: str | None  # without angle brackets
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str
    from_addr: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None  # aware, UTC
    text: str
    new_text: str
    quoted: str
    signature: str
    body_source: BodySource
    attachments: tuple[Attachment, ...]
    auto_reply: str | None  # why it looks machine-sent (see mailbot.parse.autoreply), else None
    list_id: str | None
    defects: tuple[str, ...]  # what the parser had to work around, short kebab-case names
    language_hint: str | None  # from Content-Language, lower case
    hidden_chars: int = 0  # characters of HTML text a reader could not see, dropped from `text`

    @property
    def customer_text(self) -> str:
        """What the classifier, the knowledge-base search and the router read: the subject,
        then what the customer wrote this time (no quoted history, no signature)."""
        return join_text(self.subject, self.new_text or self.text)

    @property
    def text_with_signature(self) -> str:
        """What field extraction reads: the subject, the new text and the signature, which is
        where phone numbers and addresses live (no quoted history)."""
        # Not stripped: the spans of extracted values point into exactly this text.
        parts = (self.subject, self.new_text or self.text, self.signature if self.new_text else "")
        return "\n\n".join(part for part in parts if part)

    @property
    def reply_address(self) -> Address | None:
        """Where a reply goes: the first Reply-To, else From."""
        return self.reply_to[0] if self.reply_to else self.from_addr

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field (`from_addr` is written as `from`)."""
        return {
            "sha256": self.sha256,
            "size": self.size,
            "message_id": self.message_id,
            "in_reply_to": self.in_reply_to,
            "references": list(self.references),
            "subject": self.subject,
            "from": self.from_addr.to_json() if self.from_addr else None,
            "reply_to": [a.to_json() for a in self.reply_to],
            "to": [a.to_json() for a in self.to],
            "cc": [a.to_json() for a in self.cc],
            "date": self.date.isoformat() if self.date else None,
            "text": self.text,
            "new_text": self.new_text,
            "quoted": self.quoted,
            "signature": self.signature,
            "body_source": self.body_source,
            "attachments": [a.to_json() for a in self.attachments],
            "auto_reply": self.auto_reply,
            "list_id": self.list_id,
            "defects": list(self.defects),
            "language_hint": self.language_hint,
            "hidden_chars": self.hidden_chars,
        }
