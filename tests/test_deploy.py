"""The systemd unit is valid as systemd itself reads it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "mailbot.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # Point the unit at this environment's console script, so only the unit itself is judged.
    mailbot = Path(sys.executable).with_name("mailbot")
    text = UNIT.read_text().replace("/opt/mailbot/.venv/bin/mailbot", str(mailbot))
    unit = tmp_path / "mailbot.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "mailbot.service" in line]
    assert problems == []


def test_unit_runs_the_worker_hardened_and_restarts_sensibly() -> None:
    text = UNIT.read_text()
    for line in ("User=mailbot", "ExecStart=/opt/mailbot/.venv/bin/mailbot run",
                 "Restart=on-failure", "RestartPreventExitStatus=66 78", "KillSignal=SIGTERM",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
        assert line in text
