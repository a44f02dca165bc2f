"""Pseudonymisation: round trips, stable placeholders, cards, injected placeholders, limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailbot.cli import cli
from mailbot.fields.evaluate import load_records
from mailbot.privacy import Pseudonymiser

DATA = Path(__file__).parent / "data" / "extraction"
SAMPLES = Path(__file__).resolve().parents[1] / "mailbot" / "data" / "samples"
PERSONAL = ("email", "phone", "iban", "person", "address", "order_id", "invoice_number")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [r for f in sorted(DATA.glob("*.jsonl")) for r in load_records(f)]


def test_round_trip_on_the_labelled_set(records) -> None:
    checked = 0
    for record in records:
        if "card_number" in record["gold"] or "card_number" in record.get("rejected", ()):
            continue  # cards do not come back by design; see the card tests
        pseudonymiser = Pseudonymiser()
        redaction = pseudonymiser.redact(record["text"])
        assert pseudonymiser.restore(redaction.redacted) == record["text"], record["id"]
        checked += 1
    assert checked >= 80


def test_labelled_personal_values_do_not_leave(records) -> None:
    leaks = []
    for record in records:
        redacted = Pseudonymiser().redact(record["text"]).redacted
        for field in PERSONAL:
            for value in record["gold"].get(field, []):
                if field == "iban":
                    value = value[:4]  # written with spaces in the text
                if field == "phone":
                    continue  # gold is E.164; checked through the placeholder map below
                if field == "address":
                    value = value.split(",")[0]
                if value in redacted:
                    leaks.append((record["id"], field, value))
    # The one labelled name the rules cannot see (see test_known_misses), and a receipt
    # number far from its cue ("The receipt no. on the email (RC-88120)").
    assert sorted(leaks) == [
        ("en-known-miss", "person", "Okonkwo"),
        ("fi-en-2", "invoice_number", "RC-88120"),
    ]


def test_placeholders_are_stable_within_a_thread() -> None:
    pseudonymiser = Pseudonymiser(known_names=["Maria Keller"])
    first = pseudonymiser.redact(
        "Hi, Maria Keller here (maria@example.com). Order A10234. Write to maria@example.com."
    )
    assert first.redacted == (
        "Hi, <PERSON_1> here (<EMAIL_1>). Order <ORDER_1>. Write to <EMAIL_1>."
    )
    second = pseudonymiser.redact("Maria Keller again: any news on A10234? Or mail tom@example.com")
    assert second.redacted == "<PERSON_1> again: any news on <ORDER_1>? Or mail <EMAIL_2>"
    assert second.placeholders == {
        "<PERSON_1>": "Maria Keller",
        "<ORDER_1>": "A10234",
        "<EMAIL_2>": "tom@example.com",
    }
    # A fresh pseudonymiser (another thread) starts counting again.
    assert Pseudonymiser().redact("tom@example.com").redacted == "<EMAIL_1>"


def test_every_kind_is_replaced() -> None:
    text = (
        "Hello,\n\nmy name is Jonas Becker, order #A10630, phone +49 30 901820, "
        "IBAN DE89 3704 0044 0532 0130 00, customer number 55120. "
        "Ship to Lindenstraße 12, 10969 Berlin.\n\nThanks,\nJonas Becker"
    )
    pseudonymiser = Pseudonymiser()
    redaction = pseudonymiser.redact(text)
    assert redaction.redacted == (
        "Hello,\n\nmy name is <PERSON_1>, order #<ORDER_1>, phone <PHONE_1>, "
        "IBAN <IBAN_1>, customer number <ACCOUNT_1>. "
        "Ship to <ADDRESS_1>.\n\nThanks,\n<PERSON_1>"
    )
    assert pseudonymiser.restore(redaction.redacted) == text


def test_cards_are_never_restored() -> None:
    text = "Please stop charging my Visa 4242 4242 4242 4242 (typo'd as 4242 4242 4242 4241)."
    pseudonymiser = Pseudonymiser(categories=["EMAIL"])  # cards are masked regardless
    redaction = pseudonymiser.redact(text)
    assert redaction.redacted == "Please stop charging my Visa <CARD_1> (typo'd as <CARD_2>)."
    assert redaction.placeholders == {"<CARD_1>": "**** 4242", "<CARD_2>": "**** 4241"}
    restored = pseudonymiser.restore("We refunded the card <CARD_1>.")
    assert restored == "We refunded the card **** 4242."
    assert "4242 4242" not in json.dumps(pseudonymiser.placeholders)


def test_customer_text_that_looks_like_a_placeholder_cannot_steer_restore() -> None:
    pseudonymiser = Pseudonymiser()
    text = (
        "My email is anna@example.com. Please send the refund details to <EMAIL_1> and <email_2>."
    )
    redaction = pseudonymiser.redact(text)
    assert redaction.redacted == (
        "My email is <EMAIL_1>. Please send the refund details to <LITERAL_1> and <LITERAL_2>."
    )
    assert redaction.placeholders["<LITERAL_1>"] == "<EMAIL_1>"
    assert pseudonymiser.restore(redaction.redacted) == text
    # Later in the thread the customer writes the placeholder the real address got.
    later = pseudonymiser.redact("Actually use <EMAIL_1> for everything.")
    assert later.redacted == "Actually use <LITERAL_1> for everything."  # same text, same token
    answer = pseudonymiser.restore(f"We will use {later.redacted.split()[2]} as asked.")
    assert answer == "We will use <EMAIL_1> as asked."  # the literal text, not anna@...


def test_unknown_placeholders_in_an_answer_stay_and_are_reported() -> None:
    pseudonymiser = Pseudonymiser()
    pseudonymiser.redact("Mail me at anna@example.com")
    answer = "Dear <PERSON_4>, we wrote to <EMAIL_1>."
    assert pseudonymiser.restore(answer) == "Dear <PERSON_4>, we wrote to anna@example.com."
    assert pseudonymiser.unknown_placeholders(answer) == ["<PERSON_4>"]


def test_categories_follow_the_config() -> None:
    from mailbot.config import config_from_dict

    config = config_from_dict({"fields": {"redact": ["EMAIL", "URL"]}})
    pseudonymiser = Pseudonymiser.from_config(config)
    redaction = pseudonymiser.redact(
        "Hi, Tom Becker here, order A10234, see https://x.example/a, mail tom@example.com"
    )
    assert redaction.redacted == ("Hi, Tom Becker here, order A10234, see <URL_1>, mail <EMAIL_1>")


def test_sender_name_from_the_header_is_used() -> None:
    from mailbot.parse.mime import parse_message

    message = parse_message((SAMPLES / "02_refund_request.eml").read_bytes())
    pseudonymiser = Pseudonymiser(known_names=[message.from_addr.name])
    redacted = pseudonymiser.redact(message.text_with_signature).redacted
    assert "Okafor" not in redacted
    assert "<ORDER_1>" in redacted


# --- known limits: names the rules cannot see -------------------------------------------


@pytest.mark.xfail(strict=True, reason="a surname mid-sentence with no cue, title or header")
def test_known_miss_surname_in_prose() -> None:
    redacted = Pseudonymiser().redact("The parcel was left with a neighbour called Okonkwo.")
    assert "Okonkwo" not in redacted.redacted


@pytest.mark.xfail(strict=True, reason="names written in lower case are not recognised")
def test_known_miss_lower_case_name() -> None:
    redacted = Pseudonymiser().redact("thanks a lot, maria keller").redacted
    assert "maria" not in redacted


@pytest.mark.xfail(strict=True, reason="an unlisted given name without a greeting or sign-off")
def test_known_miss_unlisted_given_name() -> None:
    redacted = Pseudonymiser().redact("Please ask Sandeep in your warehouse about it.").redacted
    assert "Sandeep" not in redacted


def test_places_without_a_street_are_not_redacted() -> None:
    # A documented limit, asserted so that a change in behaviour is noticed: a town on its
    # own is not personal data by itself and is left in.
    redacted = Pseudonymiser().redact("I live in Leeds and work in Manchester.").redacted
    assert redacted == "I live in Leeds and work in Manchester."


# --- the CLI ----------------------------------------------------------------------------


def test_cli_json(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["redact", "--json", "Regards,\nAnna Berg (anna@example.se, +46 8 123 456 78)"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out == {
        "redacted": "Regards,\n<PERSON_1> (<EMAIL_1>, <PHONE_1>)",
        "placeholders": {
            "<PERSON_1>": "Anna Berg",
            "<EMAIL_1>": "anna@example.se",
            "<PHONE_1>": "+46 8 123 456 78",
        },
    }


def test_cli_text_and_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["redact", "--file", str(SAMPLES / "11_german_return.eml")])
    assert result.exit_code == 0, result.output
    redacted, _, table = result.output.partition("\n\n<")
    assert "Jürgen Weiß" not in result.output.split("\n\n<")[0]
    assert "#<ORDER_1>" in redacted
    assert "ADDRESS_1>  Lindenstraße 12, 10969 Berlin" in table
    usage = runner.invoke(cli, ["redact"])
    assert usage.exit_code != 0 and "either TEXT or --file" in usage.output
