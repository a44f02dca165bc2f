"""What the cloud LLM receives for an escalated email: the real pipeline, the fake cloud.

The body is redacted, and so are the extracted fields handed to the model as facts: an
order number the body shows as <ORDER_1> must not come back in clear beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.fake_openai import default_answer
from tests.support.mail import support_email
from tests.test_escalation import llm_config, process

SENDER = "Lena Vogel <lena.vogel@example.de>"
BODY = (
    "Guten Tag,\n\nmeine Bestellung 48213 (Rechnung Nr. 2024-118, Kundennummer 55120) kam "
    "nie an, Sendungsnummer RT4471190235. Mein Anwalt meldet sich, wenn ich bis Freitag "
    "nichts höre. Rückruf bitte: Tel. 030 12345678, Handy 0171 2345678, oder an "
    "lena (at) example (dot) de. Erstattung der 129,90 € auf de89 3704 0044 0532 0130 00; "
    "die Karte 4242-4242-4242-4242 bitte nicht mehr belasten.\n\nMit freundlichen Grüßen\n"
    "Lena Vogel"
)
SECRETS = (
    "48213", "2024-118", "55120", "RT4471190235", "030 12345678", "12345678",
    "0171 2345678", "2345678", "lena (at) example", "de89", "0532 0130 00", "4242-4242",
    "Lena", "Vogel", "lena.vogel",
)


def test_nothing_personal_reaches_the_cloud_in_the_body_or_the_facts(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any
) -> None:
    fake_llm.default = default_answer
    config = llm_config(tmp_path, encoder_dir, fake_llm, llm_classify="always")
    process(config, [support_email(1, body=BODY, sender=SENDER,
                                   subject="Bestellung 48213 fehlt")], tmp_path)  # fmt: skip
    assert fake_llm.chat_requests, "the email was not escalated"
    for request in fake_llm.chat_requests:
        text = request.text()
        leaked = [value for value in SECRETS if value in text]
        assert leaked == [], leaked
    reply_request = fake_llm.chat_requests[-1].text()
    assert "129,90 €" in reply_request or "129.90" in reply_request  # amounts stay readable
