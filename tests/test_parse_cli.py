"""`mailbot parse`: JSON Lines per file, per-file errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.cli import cli
from mailbot.cli.common import run_cli

SAMPLES = Path(__file__).resolve().parents[1] / "mailbot/data/samples"
ORDER = SAMPLES / "01_order_status.eml"
THREAD = SAMPLES / "13_thread_reply.eml"


def parse_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict]]:
    code = run_cli(cli, ["parse", *args])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def test_each_file_gives_one_json_line_and_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, records = parse_cli(capsys, str(ORDER), str(THREAD))
    assert code == 0
    assert [r["file"] for r in records] == [str(ORDER), str(THREAD)]
    order, thread = records
    assert order["ok"] is True
    assert order["message_id"] == "CAE7qK3mRz1pX0-order-status@mail.example.com"
    assert order["subject"] == "Where is my order #A10234?"
    assert order["from"] == {"name": "Emma Clarke", "email": "emma.clarke@example.com"}
    assert order["auto_reply"] is None
    assert "order #A10234" in order["text"]
    # `text` is the new text only: no quoted history, no signature
    assert "From: Northwind Outfitters Support" not in thread["text"]
    assert "Procurement Lead" not in thread["text"]
    assert "40 fleece jackets" in thread["text"]
    assert "full_text" not in thread


def test_full_adds_body_quote_and_signature(capsys: pytest.CaptureFixture[str]) -> None:
    code, [thread] = parse_cli(capsys, "--full", str(THREAD))
    assert code == 0
    assert thread["quoted"].startswith("From: Northwind Outfitters Support")
    assert thread["signature"].startswith("Best regards,")
    assert thread["text"] in thread["full_text"]


def test_missing_and_unparsable_files_are_error_lines_and_exit_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    missing = tmp_path / "missing.eml"
    code, records = parse_cli(capsys, str(missing), str(ORDER), str(junk))
    assert code == 1
    assert [(r["file"], r["ok"]) for r in records] == [
        (str(missing), False),
        (str(ORDER), True),
        (str(junk), False),
    ]
    assert "No such file" in records[0]["error"]
    assert "header" in records[2]["error"]


def test_the_installed_command_reads_stdin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailbot", "parse", "-"],
        input=ORDER.read_bytes(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert (record["file"], record["ok"], record["subject"]) == (
        "-",
        True,
        "Where is my order #A10234?",
    )


def test_no_files_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(cli, ["parse"]) == 64
