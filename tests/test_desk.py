"""The review desk without a browser: desk accounts from the CLI, the login redirect guard,
the systemd unit of `mailbot web`, and config errors a user can act on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.config import config_from_dict
from mailbot.errors import ConfigError
from mailbot.web.auth import safe_next

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "mailbot-web.service"


def run(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbot", "--config", str(config), *args],
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_user_commands_add_list_passwd_remove(tmp_path: Path, db_url: str) -> None:
    config = tmp_path / "mailbot.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n[database]\nurl = "{db_url}"\n')
    added = run(config, "user", "add", "bob", "--role", "manager", "--password-stdin",
                stdin="a-long-password\n")
    assert added.returncode == 0, added.stderr
    again = run(config, "user", "add", "bob", "--password-stdin", stdin="a-long-password\n")
    assert again.returncode != 0 and "exists already" in again.stderr
    short = run(config, "user", "add", "eve", "--password-stdin", stdin="short\n")
    assert short.returncode != 0 and "at least 8 characters" in short.stderr
    bad_role = run(config, "user", "add", "eve", "--role", "boss", "--password-stdin")
    assert bad_role.returncode == 64 and "boss" in bad_role.stderr
    listed = run(config, "user", "list")
    assert "bob\tmanager" in listed.stdout
    assert run(config, "user", "passwd", "bob", "--password-stdin",
               stdin="another-password\n").returncode == 0
    assert run(config, "user", "remove", "bob").returncode == 0
    gone = run(config, "user", "remove", "bob")
    assert gone.returncode != 0 and "no desk user named 'bob'" in gone.stderr


@pytest.mark.parametrize("target, expected", [
    ("/messages/3", "/messages/3"), ("/?tab=human", "/?tab=human"),
    ("//evil.example/x", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("", "/"), (None, "/"), ("/\nSet-Cookie: x", "/"),
])
def test_only_paths_on_this_site_are_followed_after_login(target: str | None,
                                                          expected: str) -> None:
    assert safe_next(target) == expected


def test_plain_smtp_only_on_loopback_and_a_password_needs_a_user() -> None:
    account = {"name": "support", "host": "127.0.0.1", "username": "u", "password": "p"}
    with pytest.raises(ConfigError, match="loopback"):
        config_from_dict({"accounts": [{**account, "smtp": {"host": "smtp.example.com",
                                                             "tls": "plain"}}]})
    with pytest.raises(ConfigError, match="no username"):
        config_from_dict({"accounts": [{**account, "smtp": {"host": "smtp.example.com",
                                                             "password_env": "X"}}]})
    with pytest.raises(ConfigError, match="trusted_proxies"):
        config_from_dict({"web": {"trusted_header": "X-Remote-User"}})
    ok = config_from_dict({"accounts": [{**account, "smtp": {"host": "smtp.example.com"}}]})
    assert ok.accounts[0].smtp is not None and ok.accounts[0].smtp.effective_port == 587


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_web_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    mailbot = Path(sys.executable).with_name("mailbot")
    unit = tmp_path / "mailbot-web.service"
    unit.write_text(UNIT.read_text().replace("/opt/mailbot/.venv/bin/mailbot", str(mailbot)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert [line for line in (result.stdout + result.stderr).splitlines()
            if "mailbot-web.service" in line] == []
    assert "ExecStart=/opt/mailbot/.venv/bin/mailbot web" in UNIT.read_text()
