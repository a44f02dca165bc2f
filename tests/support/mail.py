"""Realistic support emails built for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

_BODIES = [
    "Hi,\n\nI ordered a rain jacket last week (order #A{n:05d}) and the tracking page has not "
    "changed for four days. Could you tell me when it will arrive?\n\nThanks,\nMaria",
    "Hello support,\n\nI was charged twice for my subscription this month ({n} EUR each). "
    "Please refund the duplicate payment.\n\nBest regards,\nTom",
    "Hi there,\n\nI can't log in to my account since yesterday; the password reset email never "
    "arrives. My username is customer{n}.\n\nCheers,\nAli",
    "Dear team,\n\nThe app crashes every time I open the order history on Android 14. "
    "Version 3.{n}.1. Can you help?\n\nKind regards,\nSophie",
]


def support_email(
    n: int,
    *,
    subject: str | None = None,
    body: str | None = None,
    sender: str | None = None,
    headers: dict[str, str] | None = None,
    padding: int = 0,
) -> bytes:
    """A plausible customer email, numbered so that each one is distinct."""
    msg = EmailMessage()
    msg["From"] = sender or f"Customer {n} <customer{n}@example.org>"
    msg["To"] = "Support <support@shop.example.com>"
    msg["Subject"] = subject or f"Question about order A{n:05d}"
    msg["Date"] = format_datetime(datetime(2026, 11, 1, 9, 0, tzinfo=UTC) + timedelta(minutes=n))
    msg["Message-ID"] = make_msgid(idstring=f"t{n}", domain="example.org")
    for key, value in (headers or {}).items():
        msg[key] = value
    text = body or _BODIES[n % len(_BODIES)].format(n=n)
    if padding:
        text += "\n\n" + ("Lorem ipsum dolor sit amet. " * (padding // 28 + 1))[:padding]
    msg.set_content(text)
    return msg.as_bytes()


def out_of_office(n: int) -> bytes:
    return support_email(
        n,
        subject="Automatic reply: Your ticket",
        body="I am out of the office until Monday and will reply when I am back.",
        headers={"Auto-Submitted": "auto-replied", "X-Autoreply": "yes"},
    )


def bounce(n: int) -> bytes:
    """A delivery status notification (multipart/report) from MAILER-DAEMON."""
    msg = EmailMessage()
    msg["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.org>"
    msg["To"] = "support@shop.example.com"
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["Message-ID"] = make_msgid(idstring=f"bounce{n}", domain="mx.example.org")
    msg.set_content("This is the mail system at host mx.example.org.\n\nYour message could not be "
                    "delivered to one or more recipients.")
    msg.add_attachment(
        "Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; nobody@example.org\n"
        "Action: failed\nStatus: 5.1.1\n",
        subtype="delivery-status",
    )
    msg.set_type("multipart/report")
    msg.set_param("report-type", "delivery-status")
    return msg.as_bytes()
