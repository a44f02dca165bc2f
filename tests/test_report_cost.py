"""`mailbot report cost` and `mailbot report teacher-labels` through the real CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailbot.cli import cli
from mailbot.cli.common import run_cli
from mailbot.db.llm_records import TeacherLabel
from mailbot.db.models import Event, MessageStatus
from mailbot.ingest.ledger import (
    NewMessage,
    add_messages,
    get_or_create_mailbox,
    record_event,
    sha256_hex,
)
from tests.support.mail import out_of_office, support_email

PARCEL_BODY = "\n".join(["My parcel has not arrived yet, please help."] * 9)  # 395 chars
PARCEL_SUBJECT = "Parcel missing"  # 14 chars: 409 chars of text, 103 tokens at 4 per token


def write_config(tmp_path: Path, db_url: str, **cost: Any) -> Path:
    values = {"currency": "EUR", "llm_input_per_million": 2.0, "llm_output_per_million": 10.0,
              "chars_per_token": 4.0, "prompt_overhead_tokens": 100, "typical_output_tokens": 50,
              **cost}
    lines = [f'data_dir = "{tmp_path / "var"}"', "[database]", f'url = "{db_url}"', "[cost]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "mailbot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def mailbot(config: Path, *args: str, capsys: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run_cli(cli, ["--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def add(session: Any, n: int, raw: bytes, status: MessageStatus) -> int:
    mailbox = get_or_create_mailbox(session, "acct", "INBOX")
    (row,) = add_messages(session, mailbox, [NewMessage(
        uidvalidity=1, uid=n, raw=raw, size=len(raw), sha256=sha256_hex(raw),
        message_id=None, subject=None, sender=None, received_at=None)])
    row.status = status
    return row.id


@pytest.fixture()
def audit_log(database) -> Any:
    """Four messages with known costs and tokens; one of them from 2020, one an auto-reply."""
    with database.session() as session:
        escalated = add(session, 1, support_email(1), MessageStatus.DRAFTED)
        record_event(session, "classify", "ok", message_pk=escalated, cost=0.0001, tokens_in=60)
        record_event(session, "llm", "ok", message_pk=escalated, tokens_in=1000, tokens_out=200,
                     cost=0.004, model="m")
        record_event(session, "llm", "ok", message_pk=escalated, tokens_in=500, tokens_out=100,
                     cost=0.002, model="m")
        local = add(session, 2, support_email(2, subject=PARCEL_SUBJECT, body=PARCEL_BODY),
                    MessageStatus.DRAFTED)
        record_event(session, "classify", "ok", message_pk=local, cost=0.0002)
        skipped = add(session, 3, out_of_office(3), MessageStatus.SKIPPED)
        record_event(session, "parse", "skipped", message_pk=skipped, cost=0.00005)
        old = add(session, 4, support_email(4), MessageStatus.DRAFTED)
        session.add(Event(message_pk=old, stage="llm", outcome="ok", details={}, cost=0.28,
                          tokens_in=90_000, tokens_out=10_000, actor="worker",
                          created_at=datetime(2020, 1, 1, tzinfo=UTC)))
    return database


def test_report_cost_arithmetic(audit_log, tmp_path, capsys) -> None:
    config = write_config(tmp_path, audit_log.url)
    code, out, err = mailbot(config, "report", "cost", "--since", "2021-01-01", "--json",
                             capsys=capsys)
    assert code == 0, err
    report = json.loads(out)
    # Handled: the escalated and the local message (the auto-reply and the 2020 one are not).
    assert report["messages"] == 2 and report["escalated"] == 1
    assert report["escalated_share"] == 0.5
    assert report["spent"] == pytest.approx(0.0001 + 0.004 + 0.002 + 0.0002 + 0.00005)
    assert report["spent_llm"] == pytest.approx(0.006)
    assert report["llm_tokens_in"] == 1500 and report["llm_tokens_out"] == 300
    # All-cloud: recorded tokens for the escalated one; 100 + ceil(409 / 4) in, 50 out for
    # the other.
    assert report["all_cloud_tokens_in"] == 1500 + 100 + 103
    assert report["all_cloud_tokens_out"] == 300 + 50
    expected = (1703 * 2.0 + 350 * 10.0) / 1e6
    assert report["all_cloud_estimate"] == pytest.approx(expected)
    assert report["saving_percent"] == pytest.approx(100 * (1 - 0.00635 / expected), abs=0.01)
    assert report["estimated_messages"] == 1 and report["currency"] == "EUR"


def test_report_cost_all_time_and_text(audit_log, tmp_path, capsys) -> None:
    config = write_config(tmp_path, audit_log.url)
    code, out, _ = mailbot(config, "report", "cost", "--json", capsys=capsys)
    report = json.loads(out)
    assert report["messages"] == 3 and report["escalated"] == 2
    assert report["spent"] == pytest.approx(0.28635)
    assert report["all_cloud_tokens_in"] == 1703 + 90_000
    code, out, _ = mailbot(config, "report", "cost", "--since", "2021-01-01", capsys=capsys)
    assert code == 0
    assert "messages handled      2" in out
    assert "escalated to the LLM  1 (50.0%)" in out
    assert "spent                 0.006350 EUR  (cloud LLM 0.006000" in out
    assert "all-cloud estimate    0.006906 EUR  (1703 tokens in, 350 out)" in out
    assert "saving                8.1%" in out  # 1 - 0.00635 / 0.006906 = 0.0805
    assert "text length at 4 chars/token + 100 prompt tokens in and 50 tokens out" in out


def test_report_cost_window_until(audit_log, tmp_path, capsys) -> None:
    config = write_config(tmp_path, audit_log.url)
    _, out, _ = mailbot(config, "report", "cost", "--until", "2021-01-01", "--json",
                        capsys=capsys)
    report = json.loads(out)
    assert (report["messages"], report["escalated"], report["spent"]) == (1, 1, 0.28)
    assert report["saving_percent"] == 0.0  # all of it went to the cloud


def test_report_cost_bad_input(sqlite_database, tmp_path, capsys) -> None:
    config = write_config(tmp_path, sqlite_database.url)
    code, _, err = mailbot(config, "report", "cost", "--since", "last tuesday", capsys=capsys)
    assert code == 64 and "last tuesday" in err and "Traceback" not in err
    code, _, err = mailbot(config, "report", "cost", "--since", "2026-02-01", "--until",
                           "2026-01-01", capsys=capsys)
    assert code == 64 and "--until must be a later day" in err
    code, out, _ = mailbot(config, "report", "cost", capsys=capsys)
    assert code == 0 and "messages handled      0" in out and "n/a" in out


def test_report_teacher_labels_export(sqlite_database, tmp_path, capsys) -> None:
    with sqlite_database.session() as session:
        pk = add(session, 1, support_email(1), MessageStatus.DRAFTED)
        session.add(TeacherLabel(message_pk=pk, kind="intent", label="refund",
                                 value={"label": "refund"}, input_text="Refund\n\nMoney back",
                                 confidence=0.9, model="m",
                                 created_at=datetime(2026, 1, 5, tzinfo=UTC)))
    config = write_config(tmp_path, sqlite_database.url)
    out_file = tmp_path / "labels.csv"
    code, out, err = mailbot(config, "report", "teacher-labels", "-o", str(out_file),
                             capsys=capsys)
    assert code == 0, err
    assert out.strip() == f"1 intent label(s) written to {out_file}"
    assert out_file.read_text() == 'text,label\n"Refund\n\nMoney back",refund\n'
    code, out, _ = mailbot(config, "report", "teacher-labels", "-o", str(out_file), "--since",
                           "2026-02-01", "--json", capsys=capsys)
    assert json.loads(out)["rows"] == 0
