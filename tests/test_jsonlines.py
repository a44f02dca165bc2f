"""JSON Lines output stays one record per line for every reader, whatever the mail holds.

U+0085, U+2028 and U+2029 are valid unescaped in JSON strings, but Python's
`str.splitlines()` splits at all three and JavaScript at the last two.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailbot.cli import cli
from mailbot.jsonlines import dumps, split_records

BREAKERS = ("\u0085", "\u2028", "\u2029")

# A real message: the subject is RFC 2047 encoded ("Rechnung <U+2028>4412"), the body
# quoted-printable with U+2028, U+0085 and U+2029 inside sentences.
EML = (
    b"From: Lena Vogel <lena@example.de>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: =?utf-8?b?UmVjaG51bmcg4oCoNDQxMg==?=\r\n"
    b"Date: Mon, 16 Mar 2026 10:00:00 +0100\r\n"
    b"Message-ID: <ls-1@example.de>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Hallo,\r\n\r\n"
    b"meine Bestellung A10234=E2=80=A8kam nicht an.=C2=85Bitte pr=C3=BCfen=E2=80=A9Sie das.\r\n"
    b"\r\n"
    b"Danke\r\nLena\r\n"
)


def _assert_one_record_per_line(output: str, expected: int) -> list[dict]:
    for char in BREAKERS:
        assert char not in output, f"unescaped U+{ord(char):04X} in the output"
    python_lines = output.splitlines()
    js_lines = output.rstrip("\n").split("\n")  # JS splits at \n, \r, U+2028, U+2029
    assert len(python_lines) == len(js_lines) == expected
    return [json.loads(line) for line in python_lines]


def test_dumps_escapes_only_what_splits_lines() -> None:
    value = {"text": "a\u2028b\u0085c\u2029d é \n"}
    line = dumps(value)
    assert line == '{"text": "a\\u2028b\\u0085c\\u2029d é \\n"}'
    assert len(line.splitlines()) == 1
    assert json.loads(line) == value
    pretty = dumps(value, indent=2)
    assert json.loads(pretty) == value and not any(c in pretty for c in BREAKERS)


def test_split_records_keeps_separators_inside_strings() -> None:
    text = '{"t": "a\u2028b"}\r\n{"t": "c\u0085d"}\n'
    assert [json.loads(line)["t"] for _, line in split_records(text)] == ["a\u2028b", "c\u0085d"]
    assert list(split_records("")) == []


def test_parse_prints_one_line_per_email_through_the_installed_command(tmp_path: Path) -> None:
    mail = tmp_path / "separators.eml"
    mail.write_bytes(EML)
    result = subprocess.run(
        [sys.executable, "-m", "mailbot", "parse", "--full", str(mail), str(mail)],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    records = _assert_one_record_per_line(result.stdout.decode("utf-8"), 2)
    for record in records:
        assert record["subject"] == "Rechnung \u20284412"
        assert "A10234\u2028kam nicht an.\u0085Bitte prüfen\u2029Sie das." in record["text"]
        assert "\u2029" in record["full_text"]


def test_extract_jsonl_reads_and_writes_records_with_separators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "in.jsonl"
    records = [
        {"text": "order A10234\u2028arrived broken\u2029paid €20"},
        {"text": "invoice 4412\u0085wrong"},
    ]
    # Written as JSON allows, with the characters raw inside the strings.
    source.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", "utf-8"
    )
    result = CliRunner().invoke(cli, ["extract", "--jsonl", str(source)])
    assert result.exit_code == 0, result.output
    first, second = _assert_one_record_per_line(result.output, 2)
    assert first["fields"]["order_id"]["value"] == "A10234"
    assert first["fields"]["amount"]["value"] == {"amount": "20.00", "currency": "EUR"}
    assert second["fields"]["invoice_number"]["value"] == "4412"


def test_extract_file_output_has_no_raw_separators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mail = tmp_path / "separators.eml"
    mail.write_bytes(EML)
    result = CliRunner().invoke(cli, ["extract", "--file", str(mail)])
    assert result.exit_code == 0, result.output
    assert not any(c in result.output for c in BREAKERS)
    out = json.loads(result.output)
    assert "A10234\u2028kam" in out["text"]
    assert out["fields"]["order_id"]["value"] == "A10234"
