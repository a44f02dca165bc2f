"""Bad configuration is reported with the key, the value and what was expected."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailbot.config import config_from_dict, load_config
from mailbot.errors import ConfigError, ExitCode

GOOD = """
data_dir = "state"

[database]
url = "sqlite:///{tmp}/x.db"

[[accounts]]
name = "support"
host = "imap.example.com"
username = "support@example.com"
password_env = "SUPPORT_PW"
mailboxes = ["INBOX", "Support"]
processed_action = "move"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailbot.toml"
    path.write_text(textwrap.dedent(text).format(tmp=tmp_path))
    return path


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    [account] = config.accounts
    assert account.effective_port == 993 and account.tls == "implicit"
    assert account.mailboxes == ["INBOX", "Support"]
    assert config.data_path == (tmp_path / "state").resolve()
    assert config.database_url == f"sqlite:///{tmp_path}/x.db"


def test_password_from_environment_and_credentials_file(tmp_path: Path, monkeypatch) -> None:
    config = load_config(write(tmp_path, GOOD))
    monkeypatch.delenv("SUPPORT_PW", raising=False)
    with pytest.raises(ConfigError, match="SUPPORT_PW.*not set"):
        config.accounts[0].resolve_password()
    monkeypatch.setenv("SUPPORT_PW", "s3cret")
    assert config.accounts[0].resolve_password() == "s3cret"

    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "imap").write_text("from-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    account = config_from_dict({"accounts": [{
        "name": "a", "host": "h", "username": "u",
        "password_file": "$CREDENTIALS_DIRECTORY/imap"}]}).accounts[0]
    assert account.resolve_password() == "from-file"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"port": "imap"}, "accounts.support.port = 'imap': expected a valid integer"),
        ({"port": 70000}, "accounts.support.port = 70000: expected less than"),
        ({"tls": "ssl"}, "accounts.support.tls = 'ssl': expected 'implicit'"),
        ({"tls": "plain"}, "allowed only for a loopback host"),
        ({"password": "x"}, "set exactly one of password_env, password_file or password"),
        ({"processed_action": "delete"}, "processed_action = 'delete'"),
        ({"mailboxes": []}, "accounts.support.mailboxes"),
        ({"pol_interval": 5}, "accounts.support.pol_interval: unknown key"),
    ],
)
def test_bad_values_name_key_value_and_expectation(change: dict, expected: str) -> None:
    account = {"name": "support", "host": "imap.example.com", "username": "u",
               "password_env": "PW", **change}
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"accounts": [account]})
    assert expected in str(caught.value)


def test_unreadable_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[accounts]\nname = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_duplicate_account_names_rejected() -> None:
    account = {"name": "a", "host": "h", "username": "u", "password_env": "X"}
    with pytest.raises(ConfigError, match="repeated: a"):
        config_from_dict({"accounts": [account, account]})


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbot", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_reports_bad_config_with_exit_code_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('processed_action = "move"', 'processed_action = "burn"'))
    result = run_cli("--config", str(path), "run", "--once", cwd=tmp_path)
    assert result.returncode == ExitCode.CONFIG == 78
    assert "processed_action = 'burn'" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_cli("--config", str(tmp_path / "nope.toml"), "status", cwd=tmp_path)
    assert missing.returncode == 78 and "does not exist" in missing.stderr


def test_config_path_precedence(tmp_path: Path) -> None:
    import os

    (tmp_path / "mailbot.toml").write_text('data_dir = "from-cwd"\n')
    env_file = tmp_path / "env.toml"
    env_file.write_text('data_dir = "from-env"\n')
    env = {**os.environ, "MAILBOT_CONFIG": str(env_file)}
    env.pop("CI", None)
    out = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "from-env" / "mailbot.db").exists()
    env.pop("MAILBOT_CONFIG")
    out = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    assert (tmp_path / "from-cwd" / "mailbot.db").exists()
