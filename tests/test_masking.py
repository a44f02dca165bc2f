"""Card numbers and IBANs that failed validation never reach the audit log in full."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailbot.cli import cli
from mailbot.fields import RuleExtractor, build_schema
from mailbot.fields.generator import Attempt, GeneratorReport
from mailbot.fields.masking import mask_payment_data
from mailbot.fields.result import Rejection

BAD_CARD = "4242 4242 4242 4241"  # Luhn fails
BAD_AMEX = "3782-822463-10006"  # Luhn fails (3782 822463 10005 passes)
BAD_IBAN = "DE89 3704 0044 0532 0130 01"  # mod-97 fails


def _digit_runs(text: str) -> list[str]:
    """Every run of digits, separators inside it dropped ("4242 4242" -> "42424242")."""
    return [re.sub(r"\D", "", m.group()) for m in re.finditer(r"\d(?:[ .\-]?\d)*", text)]


def _leaks(text: str, secret: str) -> bool:
    """True when more of `secret`'s digits than its last four can be read in `text`."""
    digits = re.sub(r"\D", "", secret)
    head = digits[:-4]
    return any(head[i : i + 5] in run for run in _digit_runs(text) for i in range(len(head) - 4))


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("card 4242 4242 4242 4241 declined", "card **** 4241 declined"),
        ("4242-4242-4242-4241", "**** 4241"),
        ("4242424242424241", "**** 4241"),
        ("amex 3782 822463 10006", "amex **** 0006"),
        ("IBAN DE89 3704 0044 0532 0130 01", "IBAN DE** **** 3001"),
        ("iban de89370400440532013001.", "iban DE** **** 3001."),
        # Not cards: a phone with its country code, a tracking number of 20 digits, dates.
        ("+49 171 2345 6789", "+49 171 2345 6789"),
        ("00340434161094042557", "00340434161094042557"),
        ("order A10530 on 2026-03-07, $64.00", "order A10530 on 2026-03-07, $64.00"),
    ],
)
def test_mask_payment_data(text: str, masked: str) -> None:
    assert mask_payment_data(text) == masked
    assert mask_payment_data(masked) == masked  # masking twice changes nothing


def test_rejected_card_and_iban_are_masked_in_to_json() -> None:
    text = f"My Visa {BAD_CARD} and card {BAD_AMEX} were declined. Refund to IBAN {BAD_IBAN}."
    extraction = RuleExtractor().extract(text, build_schema())
    assert {r.name for r in extraction.rejected} == {"card_number", "iban"}
    # The objects keep what was written (the pseudonymiser needs the spans and text) ...
    assert BAD_CARD in [r.raw for r in extraction.rejected]
    # ... but what is handed on for storage or printing does not.
    out = json.dumps(extraction.to_json())
    for secret in (BAD_CARD, BAD_AMEX, BAD_IBAN):
        assert not _leaks(out, secret), secret
    raws = [r["raw"] for r in extraction.to_json()["rejected"]]
    assert raws == ["**** 4241", "**** 0006", "DE** **** 3001"]
    assert all(r["reason"] for r in extraction.to_json()["rejected"])


def test_a_reason_quoting_the_value_is_masked_too() -> None:
    rejection = Rejection(
        "card_number", BAD_CARD, (0, 19), f"generator: card_number '{BAD_CARD}': bad Luhn"
    )
    assert rejection.to_json()["reason"] == "generator: card_number '**** 4241': bad Luhn"


def test_generator_report_masks_what_the_model_wrote() -> None:
    output = json.dumps({"card_number": BAD_CARD, "iban": BAD_IBAN, "order_id": "A10530"})
    report = GeneratorReport(
        model="tiny",
        model_version="1",
        attempts=(Attempt(output, (f"card_number {BAD_CARD!r}: Luhn check digit fails",)),),
        dropped=(Rejection("card_number", BAD_CARD, (8, 27), "generator: Luhn"),),
    )
    stored = json.dumps(report.to_json())
    for secret in (BAD_CARD, BAD_IBAN):
        assert not _leaks(stored, secret), secret
    assert "A10530" in stored and "**** 4241" in stored


def test_extract_cli_prints_the_masked_value(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["extract", f"card number {BAD_CARD} does not work"])
    assert result.exit_code == 0, result.output
    assert not _leaks(result.output, BAD_CARD)
    assert json.loads(result.output)["rejected"][0]["raw"] == "**** 4241"


def test_the_audit_log_of_a_processed_email_holds_no_rejected_card(
    tmp_path: Path, encoder_dir: Path
) -> None:
    mail = tmp_path / "declined.eml"
    mail.write_bytes(
        b"From: Tom Becker <tom@example.com>\r\nTo: support@example.com\r\n"
        b"Subject: Declined card on order A10530\r\n"
        b"Date: Mon, 16 Mar 2026 10:00:00 +0100\r\nMessage-ID: <declined-1@example.com>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + f"Hi, my Visa card {BAD_CARD} was declined for order A10530, and so was my Amex "
        f"{BAD_AMEX}.\r\nPlease refund to IBAN {BAD_IBAN} instead.\r\n\r\nTom\r\n".encode()
    )
    (tmp_path / "mailbot.toml").write_text(
        f'data_dir = "state"\n[models]\ndir = "{encoder_dir.parent}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "mailbot", "ingest", str(mail)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "state" / "mailbot.db") as db:
        events = db.execute("SELECT stage, details FROM events").fetchall()
        facts = [json.loads(data) for (data,) in db.execute("SELECT data FROM message_facts")]
    stages = {stage: json.loads(details) for stage, details in events}
    assert [r["name"] for r in stages["extract"]["rejected"]] == ["card_number", "card_number",
                                                                  "iban"]  # fmt: skip
    [stored] = [f["extraction"] for f in facts if "extraction" in f]
    assert [r["raw"] for r in stored["rejected"]] == ["**** 4241", "**** 0006", "DE** **** 3001"]
    everything = json.dumps([events, facts])
    for secret in (BAD_CARD, BAD_AMEX, BAD_IBAN):
        assert not _leaks(everything, secret), secret
