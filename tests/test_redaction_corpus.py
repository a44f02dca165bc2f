"""No email address, phone number, card number or IBAN reaches the cloud, in any language.

tests/data/privacy/messages.jsonl holds support messages in en, de, fr, es, it, nl and pt
with those items written the way people write them (spaces, dots, dashes, parentheses,
a leading 0, +CC, 00CC, the (0) trunk, IBANs in any case and grouping, cards grouped any
way, addresses written around spam filters). Each record lists its `secrets` as written
and the ordinary numbers (order ids, amounts, dates) that must stay readable.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailbot.cli import cli
from mailbot.config import config_from_dict
from mailbot.privacy import Pseudonymiser

CORPUS = Path(__file__).parent / "data" / "privacy" / "messages.jsonl"
RECORDS = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines() if line]
# Order ids are not redacted in this configuration, so they must come through as written.
NO_ORDER = {"fields": {"redact": ["PERSON", "EMAIL", "PHONE", "IBAN", "CARD", "ADDRESS"]}}


def _digit_runs(text: str) -> list[str]:
    """Every run of digits with the separators people put inside numbers dropped."""
    return [re.sub(r"\D", "", m.group()) for m in re.finditer(r"\d(?:[ .\-/()]{0,3}\d)*", text)]


def _recoverable(secret: str, redacted: str, allowed: list[str]) -> list[str]:
    """Any four consecutive digits of `secret` still readable in `redacted`.

    Four digits found in one of the numbers that must stay (an order id, an amount) do
    not count: they are there for that number, not for the secret.
    """
    digits = re.sub(r"\D", "", secret)
    kept = [re.sub(r"\D", "", k) for k in allowed]
    windows = {digits[i : i + 4] for i in range(len(digits) - 3)}
    runs = _digit_runs(redacted)
    return sorted(w for w in windows if any(w in r for r in runs) and not any(w in k for k in kept))


def _local_part(address: str) -> str:
    return re.split(r"\s*(?:@|[(\[{]\s*at\s*[)\]}]|\sat\s)\s*", address)[0]


def test_the_corpus_covers_every_language_and_kind() -> None:
    kinds = {(r["language"], s["kind"]) for r in RECORDS for s in r["secrets"]}
    for language in ("en", "de", "fr", "es", "it", "nl", "pt"):
        for kind in ("phone", "email", "card", "iban"):
            assert (language, kind) in kinds, (language, kind)
    assert sum(len(r["secrets"]) for r in RECORDS) >= 90


@pytest.mark.parametrize("config", [{}, NO_ORDER], ids=["default", "orders-kept"])
@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_no_secret_leaves(record: dict, config: dict) -> None:
    pseudonymiser = Pseudonymiser.from_config(config_from_dict(config))
    redaction = pseudonymiser.redact(record["text"])
    keep = record["keep"]
    for secret in record["secrets"]:
        value = secret["value"]
        assert value not in redaction.redacted, value
        assert _recoverable(value, redaction.redacted, keep) == [], value
        if secret["kind"] == "email":
            assert _local_part(value) not in redaction.redacted, value
        if secret["kind"] == "card":
            # Not even the map (which stays here) holds more than the last four digits.
            digits = re.sub(r"\D", "", value)
            assert all(digits[:-4] not in re.sub(r"\D", "", v)
                       for v in redaction.placeholders.values())  # fmt: skip
    if not any(s["kind"] == "card" for s in record["secrets"]):
        assert pseudonymiser.restore(redaction.redacted) == record["text"]


@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_order_ids_amounts_and_dates_stay_readable(record: dict) -> None:
    redacted = Pseudonymiser.from_config(config_from_dict(NO_ORDER)).redact(record["text"])
    for value in record["keep"]:
        assert value in redacted.redacted, value


@pytest.mark.parametrize(
    ("regions", "text", "number"),
    [
        # The text's language counts even where its regions are not configured ...
        (["US"], "Guten Tag, bitte rufen Sie mich an, Handy 0171 2345678. Danke!", "0171"),
        (["US"], "Olá, o meu telemóvel é 912 345 678, obrigado.", "912 345"),
        # ... and the configured regions count whatever the language seems to be.
        (["DE"], "Tel. 030 12345678", "030"),
        (["GB", "CH"], "Hi, call me on 044 668 18 00 please", "044 668"),
        (["GB", "AT"], "my number: 0664 123 45 67", "0664"),
    ],
)
def test_local_numbers_of_the_language_and_the_configured_regions(
    regions: list[str], text: str, number: str
) -> None:
    config = config_from_dict({"fields": {"phone_regions": regions}})
    redaction = Pseudonymiser.from_config(config).redact(text)
    assert number not in redaction.redacted
    assert "<PHONE_1>" in redaction.redacted


def test_a_valid_card_typed_with_its_expiry_keeps_the_right_last_four() -> None:
    redaction = Pseudonymiser().redact("card 4242 4242 4242 4242 12/27 please")
    assert "4242" not in redaction.redacted
    assert redaction.placeholders == {"<CARD_1>": "**** 4242"}


def test_mailbot_redact_shows_the_berlin_number_gone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = "Hallo, meine Bestellung A10488 ist nicht da. Tel. 030 12345678, Handy 0171 2345678"
    result = CliRunner().invoke(cli, ["redact", "--json", text])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["redacted"] == (
        "Hallo, meine Bestellung <ORDER_1> ist nicht da. Tel. <PHONE_1>, Handy <PHONE_2>"
    )
    assert out["placeholders"]["<PHONE_1>"] == "030 12345678"
    text_out = CliRunner().invoke(cli, ["redact", text]).output
    assert "030 12345678" not in text_out.split("\n\n")[0]
