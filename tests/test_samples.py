"""The sample support emails shipped in mailbot/data/samples parse as a person would read them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from mailbot.parse.message import InboundMessage
from mailbot.parse.mime import parse_message

SAMPLES = sorted(
    Path(str(p))
    for p in resources.files("mailbot").joinpath("data/samples").iterdir()
    if p.name.endswith(".eml")
)
MACHINE_SENT = {
    "14_out_of_office.eml": "auto-submitted: auto-replied",
    "15_bounce.eml": "bounce: multipart/report",
}


def test_the_package_ships_a_dozen_samples() -> None:
    assert len(SAMPLES) >= 14


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_each_sample_parses_and_only_machine_mail_is_flagged(path: Path) -> None:
    message = parse_message(path.read_bytes())
    assert message.auto_reply == MACHINE_SENT.get(path.name)
    assert message.from_addr is not None
    assert message.message_id and message.subject and message.date is not None
    assert message.new_text.strip()
    # The HTML-only sample hides an injection; dropping it is the one thing worked around.
    assert message.defects == (("hidden-text",) if path.name == "12_html_only.eml" else ())


def load(name: str) -> InboundMessage:
    return parse_message(next(p for p in SAMPLES if p.name == name).read_bytes())


def test_german_sample_decodes_headers_and_quoted_printable_body() -> None:
    message = load("11_german_return.eml")
    assert message.subject == "Rücksendung Bestellung #A10488 – Jacke zu groß"
    assert message.from_addr is not None and message.from_addr.name == "Jürgen Weiß"
    assert "129,90 € soll bitte" in message.new_text
    assert message.signature.startswith("Mit freundlichen Grüßen")
    assert message.language_hint == "de-de"


def test_latin1_spanish_sample_decodes() -> None:
    message = load("16_spanish_order.eml")
    assert message.subject == "¿Dónde está mi pedido #A10501?"
    assert "botas de montaña" in message.new_text


def test_html_only_sample_is_read_without_its_hidden_instructions() -> None:
    message = load("12_html_only.eml")
    assert message.body_source == "html"
    assert "exchange it for a size S" in message.new_text
    assert "Ignore all previous instructions" not in message.text
    assert "Northwind order A10476 exchange" not in message.text  # a display:none pre-header
    assert message.hidden_chars > len("Ignore all previous instructions")


def test_thread_reply_sample_splits_history_and_signature() -> None:
    message = load("13_thread_reply.eml")
    assert message.in_reply_to == "ticket-20240314-8812@northwind.example"
    assert len(message.references) == 2
    assert message.new_text.startswith("Hi Sam,")
    assert message.new_text.endswith("VAT number GB123456789.")
    assert message.signature.splitlines()[:2] == ["Best regards,", "Mark Thompson"]
    assert message.quoted.startswith("From: Northwind Outfitters Support")
    assert "42.00 EUR per piece" in message.quoted


def test_app_crash_sample_lists_its_attachments() -> None:
    message = load("07_app_crash.eml")
    assert [(a.filename, a.content_type) for a in message.attachments] == [
        ("cart-crash.png", "image/png"),
        ("crash-log.txt", "text/plain"),
    ]
    assert "crash log" in message.new_text and "FATAL EXCEPTION" not in message.text
