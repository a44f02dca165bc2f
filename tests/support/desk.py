"""The review desk as a user meets it: a real `mailbot web` process, an aiosmtpd relay, a
real Dovecot with mail the real pipeline processed, and Debian's chromium via Playwright."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
AGENT, AGENT_PASSWORD = "alice", "alice-password-1"
ADMIN, ADMIN_PASSWORD = "root-admin", "admin-password-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ACCEPTED = "250 Message accepted for delivery"


@dataclass
class Relay:
    """An SMTP relay (aiosmtpd) that keeps every message it accepts; `answer` is what it
    says to DATA (set a 4xx or 5xx to make it refuse), `stop()` closes its port."""

    port: int
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    controller: Any = None
    answer: str = ACCEPTED
    refused: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if not self.answer.startswith("250"):
            self.refused += 1
            return self.answer
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              bytes(envelope.original_content or envelope.content)))
        return self.answer

    def start(self) -> Relay:
        from aiosmtpd.controller import Controller

        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def write_desk_config(directory: Path, account: dict[str, Any], db_url: str, models: Path,
                      relay_port: int) -> Path:
    """A config with one IMAP account and its SMTP relay."""
    lines = [f'data_dir = "{directory / "var"}"', "[database]", f'url = "{db_url}"',
             "[models]", f'dir = "{models}"', "[drafts]", 'from_name = "Northwind Support"',
             "[web]", "login_attempts = 5", "[[accounts]]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in account.items()]
    lines += ["[accounts.smtp]", 'host = "127.0.0.1"', f"port = {relay_port}",
              'tls = "plain"', "timeout = 10"]
    path = directory / "mailbot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def mailbot(config: Path, *args: str, stdin: str | None = None,
            env: dict[str, str] | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbot", "--config", str(config), *args],
                          input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


class DeskProcess:
    """`mailbot web` as a child process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, failpoints: str | None = None) -> DeskProcess:
        env = {**os.environ}
        env.pop("MAILBOT_FAILPOINTS", None)
        if failpoints:
            env["MAILBOT_FAILPOINTS"] = failpoints
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailbot", "--config", str(self.config), "web",
             "--port", str(self.port)], stdout=handle, stderr=handle, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mailbot web exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"mailbot web did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def chromium_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


def require_chromium() -> None:
    if not chromium_available():
        message = ("the browser tests need Debian's chromium and playwright: run `make test` "
                   "(scripts/test-deps.sh installs chromium) or `apt-get install chromium`")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def hostile_email() -> bytes:
    """A customer mail that tries every way of running script in the desk."""
    msg = EmailMessage()
    msg["From"] = '"<img src=x onerror=alert(11)>" <mallory@example.net>'
    msg["To"] = "support@northwind.example"
    msg["Subject"] = "<script>alert(12)</script> order A55555 <svg onload=alert(13)>"
    msg["Message-ID"] = "<xss-1@example.net>"
    msg["Date"] = "Mon, 30 Nov 2026 09:00:00 +0000"
    msg.set_content("Hello, my order A55555 <script>alert(14)</script> has not arrived.\n"
                    "<a href=\"javascript:alert(15)\">click</a> <b onmouseover=alert(16)>x")
    msg.add_alternative(
        "<html><body><p>Hello, my order A55555 has not arrived.</p>"
        "<script>alert(17)</script><img src=x onerror=alert(18)>"
        "<svg><script>alert(19)</script></svg><a href='javascript:alert(20)'>track</a>"
        "<p style='x' onclick=alert(21)>broken <b><i></p></body>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 not really", maintype="application", subtype="pdf",
                       filename="<svg onload=alert(22)>.pdf")
    return msg.as_bytes()


def browser_or_skip() -> None:
    require_chromium()
    if shutil.which("dovecot") is None:
        pytest.skip("dovecot is not installed")
