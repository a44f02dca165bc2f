"""The reply as a proper MIME message: threaded, marked auto-generated, with its token."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid

from mailbot.parse.message import Address

TOKEN_HEADER = "X-Mailbot-Draft-Token"
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw|r|rif|réf|ref)\s*:", re.IGNORECASE)


def reply_subject(subject: str) -> str:
    """`Re: subject`, without piling up prefixes."""
    subject = subject.strip()
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}" if subject else "Re:"


def new_message_id(sender: str) -> str:
    """A unique Message-ID (without brackets) in the sender's domain."""
    domain = sender.rpartition("@")[2] or "mailbot.invalid"
    return make_msgid(domain=domain)[1:-1]


def build_reply(
    *,
    sender: Address,
    to: Address,
    subject: str,
    body: str,
    message_id: str,
    in_reply_to: str | None,
    references: Sequence[str],
    token: str,
    language: str | None = None,
    html_alternative: bool = False,
    date: datetime | None = None,
    auto_submitted: bool = True,
) -> bytes:
    """Serialize a reply; In-Reply-To and References make mail clients thread it."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr((sender.name, sender.email))
    msg["To"] = formataddr((to.name, to.email))
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        # RFC 5322: the parent's References plus the parent; keep the chain bounded.
        chain = [*references, in_reply_to][-20:]
        msg["References"] = " ".join(f"<{ref}>" for ref in dict.fromkeys(chain))
    # RFC 3834: other robots must not answer this one (a reply a person approved and sent
    # is theirs, not a robot's).
    if auto_submitted:
        msg["Auto-Submitted"] = "auto-generated"
    msg[TOKEN_HEADER] = token
    if language:
        msg["Content-Language"] = language
    msg.set_content(body, charset="utf-8")
    if html_alternative:
        paragraphs = "".join(
            f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in body.split("\n\n")
        )
        msg.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
    return msg.as_bytes()
