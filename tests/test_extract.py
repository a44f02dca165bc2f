"""Field extraction end to end: the labelled set, spans, required fields and `mailbot extract`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailbot.cli import cli
from mailbot.fields import RuleExtractor, build_schema, extract_message
from mailbot.fields.evaluate import evaluate, load_records
from mailbot.parse.mime import parse_message

DATA = Path(__file__).parent / "data" / "extraction"
SAMPLES = Path(__file__).resolve().parents[1] / "mailbot" / "data" / "samples"
REF = datetime(2026, 3, 16, tzinfo=UTC)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [r for f in sorted(DATA.glob("*.jsonl")) for r in load_records(f)]


@pytest.fixture(scope="module")
def schema():
    return build_schema()


def test_labelled_set_meets_targets(records) -> None:
    assert len(records) >= 60
    report = evaluate(records)
    assert report.precision() >= 0.98, report.to_json()
    assert report.recall() >= 0.95, report.to_json()
    # Values with a bad check digit are rejected, not passed on.
    assert report.rejected_ok == report.rejected_expected >= 3


def test_labelled_set_covers_the_formats_asked_for(records) -> None:
    texts = "\n".join(r["text"] for r in records)
    for needle in ("€1.234,50", "$64.00", "142,50 EUR", "£20", "CHF 35.-", "24 February",
                   "2026-03-07", "07/03/2026", "7. März", "yesterday"):  # fmt: skip
        assert needle in texts, needle


def test_spans_point_at_the_raw_text(records, schema) -> None:
    extractor = RuleExtractor()
    checked = 0
    for record in records:
        text = record["text"]
        extraction = extractor.extract(text, schema, reference=REF)
        for values in extraction.fields.values():
            for v in values:
                start, end = v.span
                assert text[start:end] == v.raw
                if v.type in ("pattern", "string", "email", "url"):
                    assert v.raw.lower() == str(v.value).lower()
                checked += 1
    assert checked > 200


def test_same_value_twice_gives_a_list(schema) -> None:
    text = "Order A10234 arrived. Wait, A10234 was the old one."
    extraction = RuleExtractor().extract(text, schema, reference=REF)
    spans = [v.span for v in extraction.fields["order_id"]]
    second = text.index("A10234", 10)
    assert spans == [(6, 12), (second, second + 6)]
    assert isinstance(extraction.to_json()["fields"]["order_id"], list)


def test_missing_required_fields_per_intent(schema) -> None:
    extractor = RuleExtractor()
    text = "I want my money back for the broken tent, I paid €120."
    assert extractor.extract(text, schema, intent="refund").missing == ("order_id",)
    assert extractor.extract(text, schema, intent="feedback").missing == ()
    assert extractor.extract(text, schema).missing == ()
    with_order = extractor.extract(text + " Order A10999.", schema, intent="refund")
    assert with_order.missing == ()


def test_required_fields_can_be_configured() -> None:
    from mailbot.config import config_from_dict

    config = config_from_dict({"fields": {"required": {"billing": ["invoice_number"]}}})
    schema = build_schema(config.fields)
    extraction = RuleExtractor().extract("The amount on A10234 is wrong.", schema, intent="billing")
    assert extraction.missing == ("invoice_number",)


def test_wrong_checksum_is_rejected_not_passed_on(schema) -> None:
    text = "Refund to IBAN DE89 3704 0044 0532 0130 01 please, order A10521."
    extraction = RuleExtractor().extract(text, schema, reference=REF)
    assert "iban" not in extraction.fields
    [rejected] = extraction.rejected
    assert rejected.name == "iban"
    assert "mod-97" in rejected.reason
    assert text[rejected.span[0] : rejected.span[1]] == "DE89 3704 0044 0532 0130 01"


def test_email_file_uses_date_header_and_sender_name(schema) -> None:
    message = parse_message((SAMPLES / "05_address_change.eml").read_bytes())
    text, extraction = extract_message(message, schema, intent="shipping")
    # "placed yesterday, 7 March" in a mail sent on 8 March 2024
    assert extraction.values("date") == ["2024-03-07", "2024-03-07"]
    assert extraction.values("order_id")[0] == "A10455"
    assert "Lucia Romero" in extraction.values("person")
    assert extraction.missing == ()
    for values in extraction.fields.values():
        for v in values:
            assert text[v.span[0] : v.span[1]] == v.raw


# --- the CLI ----------------------------------------------------------------------------


def _run(args: list[str], input: str | None = None):
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=False)


def test_cli_text(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no mailbot.toml: the built-in defaults
    text = "Refund €1.234,50 for order #A10234 from 24 February, card 4242 4242 4242 4241"
    result = _run(["extract", "--date", "2026-03-10", "--intent", "refund", text])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"fields", "missing", "rejected"}
    start = text.index("A10234")
    assert out["fields"]["order_id"] == {
        "value": "A10234", "type": "pattern", "span": [start, start + 6], "confidence": 0.97,
    }  # fmt: skip
    assert out["fields"]["amount"]["value"] == {"amount": "1234.50", "currency": "EUR"}
    assert out["fields"]["date"]["value"] == "2026-02-24"
    assert out["missing"] == []
    assert [r["name"] for r in out["rejected"]] == ["card_number"]


def test_cli_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run(["extract", "--file", str(SAMPLES / "02_refund_request.eml"),
                   "--intent", "refund"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    order = out["fields"]["order_id"]
    first = order[0] if isinstance(order, list) else order
    assert first["value"] == "A10311"
    start, end = first["span"]
    assert out["text"][start:end] == "A10311"
    assert out["fields"]["amount"]["value"] == {"amount": "89.95", "currency": "EUR"}
    assert out["fields"]["tracking_number"]["value"] == "RT4471190235"


def test_cli_jsonl_keeps_order_and_reports_bad_lines(tmp_path, monkeypatch, capsys) -> None:
    from mailbot.cli.common import run_cli

    monkeypatch.chdir(tmp_path)
    lines = [
        json.dumps({"text": "order A10001 cost $20", "intent": "refund"}),
        "{not json",
        json.dumps({"text": "nothing here", "intent": "refund"}),
        json.dumps({"txt": "wrong key"}),
        json.dumps({"text": "it came yesterday", "date": "2026-03-10"}),
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert run_cli(cli, ["extract", "--jsonl", str(path)]) == 1
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert len(out) == 5
    assert out[0]["fields"]["order_id"]["value"] == "A10001"
    assert out[0]["missing"] == []
    assert out[1]["line"] == 2 and "not valid JSON" in out[1]["error"]
    assert out[2]["missing"] == ["order_id"]
    assert out[3] == {"line": 4, "error": 'expected a JSON object with a "text" string'}
    assert out[4]["fields"]["date"]["value"] == "2026-03-09"
    assert f"{path}:2: not valid JSON" in captured.err


def test_cli_jsonl_from_stdin(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run(["extract", "--jsonl", "-"], input='{"text": "mail me: a@b.example"}\n')
    assert result.exit_code == 0
    assert json.loads(result.output)["fields"]["email"]["value"] == "a@b.example"


def test_cli_usage_and_input_errors(tmp_path, monkeypatch, capsys) -> None:
    from mailbot.cli.common import run_cli
    from mailbot.errors import ExitCode

    monkeypatch.chdir(tmp_path)
    assert run_cli(cli, ["extract"]) == ExitCode.USAGE
    assert run_cli(cli, ["extract", "x", "--jsonl", "f"]) == ExitCode.USAGE
    assert "exactly one of" in capsys.readouterr().err
    assert run_cli(cli, ["extract", "--file", str(tmp_path / "nope.eml")]) == ExitCode.NO_INPUT
    assert "nope.eml: no such file" in capsys.readouterr().err
    assert run_cli(cli, ["extract", "--date", "soon", "x"]) == ExitCode.DATA
    assert "expected YYYY-MM-DD" in capsys.readouterr().err
