"""The CLI as a user meets it: help everywhere, local ingestion, the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mailbot.cli import cli
from tests.support.mail import out_of_office, support_email


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(all_commands(command, path))
    return found


@pytest.mark.parametrize("path", all_commands(cli), ids=lambda p: " ".join(p))
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert command.help and len(command.help.strip()) > 10, f"{' '.join(path)} lacks help text"


def mailbot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbot", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_ingest_maildir_and_eml_files_once(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.host").write_bytes(support_email(1))
    (maildir / "cur" / "2.host:2,S").write_bytes(out_of_office(2))
    loose = tmp_path / "loose.eml"
    loose.write_bytes(support_email(3))
    (tmp_path / "mailbot.toml").write_text('data_dir = "state"\n[classifier]\nenabled = false\n')

    first = mailbot("ingest", str(maildir), str(loose), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"files": 3, "ingested": 3, "already_known": 0,
                                        "processed": 3}
    again = mailbot("ingest", str(maildir), "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["already_known"] == 2
    assert json.loads(again.stdout)["ingested"] == 0

    status = json.loads(mailbot("status", "--json", cwd=tmp_path).stdout)
    assert status[0]["account"] == "local"
    assert status[0]["counts"] == {"parsed": 2, "skipped": 1}

    missing = mailbot("ingest", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode != 0 and "no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_demo_processes_the_bundled_samples(tmp_path: Path, encoder_dir: Path) -> None:
    (tmp_path / "mailbot.toml").write_text(
        f'data_dir = "state"\n[models]\ndir = "{encoder_dir.parent}"\n')
    result = mailbot("demo", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    messages = report["messages"]
    assert len(messages) >= 12
    skipped = [m for m in messages if m["status"] == "skipped"]
    assert 2 <= len(skipped) < len(messages) // 2
    assert all("no automatic reply" in m["reason"] for m in skipped)
    answered = [m for m in messages if m["status"] != "skipped"]
    assert all(m["subject"] and m["from"] for m in answered)
    # Classified out of the box by the seed heads, and most answered with a draft.
    unclassified = [(m["file"], m["status"], m["reason"]) for m in answered if "intent" not in m]
    assert unclassified == []
    drafted = [m for m in answered if m.get("draft")]
    assert len(drafted) >= len(answered) // 2
    assert all(m["draft"]["body"].startswith(("Hello", "Guten Tag", "Hola")) for m in drafted)
    intents = {m["file"]: m["intent"]["label"] for m in answered}
    assert intents["01_order_status.eml"] == "order_status"
    assert intents["03_cancellation.eml"] == "cancellation"
    assert intents["06_login_problem.eml"] == "account_access"
    assert intents["07_app_crash.eml"] == "technical_problem"
    languages = {m["file"]: m["language"] for m in answered}
    assert languages["11_german_return.eml"] == "de"
    assert Path(report["database"]).exists()
    # The human-readable form runs too and tells where the audit log is.
    text = mailbot("demo", cwd=tmp_path)
    assert text.returncode == 0 and "Audit log:" in text.stdout


def test_missing_database_server_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "mailbot.toml"
    config.write_text('[database]\nurl = "postgresql://nobody@127.0.0.1:1/none"\n')
    result = mailbot("status", cwd=tmp_path)
    assert result.returncode == 69
    assert "unavailable" in result.stderr and "Traceback" not in result.stderr


def test_parse_command_reads_a_file(tmp_path: Path) -> None:
    eml = tmp_path / "a.eml"
    eml.write_bytes(support_email(5))
    result = mailbot("parse", str(eml), cwd=tmp_path)
    assert result.returncode == 0
    record = json.loads(result.stdout.splitlines()[0])
    assert record["ok"] is True and record["subject"] == "Question about order A00005"
