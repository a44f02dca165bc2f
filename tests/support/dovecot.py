"""A real Dovecot IMAP server for tests (Debian's dovecot-imapd), on 127.0.0.1.

One server per test session; each test gets its own user and mail directory, so tests never
see each other's mail. The server can be stopped and started again (for UIDVALIDITY resets),
and faults are injected with doveadm (kick, uid-validity changes).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient

NOBODY_UID = 65534
NOBODY_GID = 65534

_CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
mail_max_userip_connections = 100
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users/%u
}}
mail_location = maildir:{d}/mail/%u
first_valid_uid = 1
namespace inbox {{
  inbox = yes
  mailbox Drafts {{
    special_use = \\Drafts
    auto = create
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ImapUser:
    """A mailbox owner on the test server."""

    server: DovecotServer
    name: str
    password: str

    def client(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.server.port, ssl=False, timeout=30)
        client.login(self.name, self.password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        with self.client() as client:
            client.append(folder, raw)

    def append_many(self, messages: list[bytes], folder: str = "INBOX") -> None:
        with self.client() as client:
            for raw in messages:
                client.append(folder, raw)

    def account_settings(self, **overrides: object) -> dict[str, object]:
        """A config `[[accounts]]` entry for this user."""
        settings: dict[str, object] = {
            "name": self.name,
            "host": "127.0.0.1",
            "port": self.server.port,
            "tls": "plain",
            "username": self.name,
            "password": self.password,
            "mailboxes": ["INBOX"],
            "poll_interval": 1,
            "timeout": 10,
        }
        settings.update(overrides)
        return settings

    @property
    def maildir(self) -> Path:
        return self.server.directory / "mail" / self.name

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.server.doveadm(*args)


class DovecotServer:
    """A Dovecot process with its own config, users file and mail root."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.config_path = directory / "dovecot.conf"
        self._users = itertools.count(1)
        for sub in ("run", "state", "mail"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)
        os.chown(directory / "mail", NOBODY_UID, NOBODY_GID)
        (directory / "users").mkdir(exist_ok=True)
        self.config_path.write_text(_CONFIG.format(d=directory, port=self.port))

    def start(self) -> None:
        subprocess.run(["dovecot", "-c", str(self.config_path)], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start; see {self.directory / 'dovecot.log'}")

    def stop(self) -> None:
        subprocess.run(["doveadm", "-c", str(self.config_path), "stop"],
                       check=False, capture_output=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.05)
            except OSError:
                return

    def restart(self) -> None:
        self.stop()
        self.start()

    def add_user(self, prefix: str = "user") -> ImapUser:
        name = f"{prefix}{next(self._users)}"
        password = f"pw-{name}"
        home = self.directory / "mail" / name
        # One passwd-file per user: Dovecot opens a new file at first lookup, whereas an
        # edited shared file is only re-read after its mtime ticks over.
        (self.directory / "users" / name).write_text(
            f"{name}:{{PLAIN}}{password}:{NOBODY_UID}:{NOBODY_GID}::{home}\n"
        )
        return ImapUser(self, name, password)

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["doveadm", "-c", str(self.config_path), *args],
                              check=True, capture_output=True, text=True)

    def reset_uids(self, user: ImapUser, folder: str = "INBOX") -> None:
        """A genuine reset: drop the folder's index and UID list, so UIDs are renumbered."""
        self.stop()
        maildir = user.maildir if folder == "INBOX" else user.maildir / f".{folder}"
        for path in maildir.iterdir():
            if path.name.startswith("dovecot-uidlist") or path.name.startswith("dovecot.index"):
                path.unlink()
        self.start()


def dovecot_available() -> bool:
    return shutil.which("dovecot") is not None and shutil.which("doveadm") is not None


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A running Dovecot for the whole test session."""
    if not dovecot_available():
        message = ("dovecot is not installed: run `make test` (it installs dovecot-imapd) or "
                   "`apt-get install dovecot-imapd`")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-"))
    server = DovecotServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture()
def imap_user(dovecot: DovecotServer) -> ImapUser:
    """A fresh user with an empty INBOX on the session's Dovecot."""
    return dovecot.add_user()
