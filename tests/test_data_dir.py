"""Where mailbot keeps its state: data_dir, systemd's StateDirectory, or the user's data folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from mailbot.config import config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_without_data_dir_state_goes_to_the_users_data_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = config_from_dict({})
    assert config.data_path == (tmp_path / "xdg" / "mailbot").resolve()
    assert config.models_path == (tmp_path / "xdg" / "mailbot" / "models").resolve()
    assert config.database_url.endswith(str(tmp_path / "xdg" / "mailbot" / "mailbot.db"))


def test_under_systemd_the_state_directory_is_used(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'lib' / 'mailbot'}:{tmp_path / 'other'}")
    assert config_from_dict({}).data_path == (tmp_path / "lib" / "mailbot").resolve()


def test_data_dir_in_the_config_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "mailbot.toml").write_text('data_dir = "state"\n')
    config = load_config(tmp_path / "etc" / "mailbot.toml")
    assert config.data_path == (tmp_path / "etc" / "state").resolve()


def test_status_says_where_things_are(tmp_path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("MAILBOT_CONFIG", None)
    run = [sys.executable, "-m", "mailbot"]
    empty = tmp_path / "anywhere"
    empty.mkdir()
    subprocess.run([*run, "db", "upgrade"], cwd=empty, env=env, check=True, capture_output=True)
    result = subprocess.run([*run, "status"], cwd=empty, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    home = tmp_path / "xdg" / "mailbot"
    assert f"data directory: {home}" in result.stdout
    assert f"database: sqlite:///{home / 'mailbot.db'}" in result.stdout
    assert list(empty.iterdir()) == []  # nothing written where the command ran


@pytest.mark.slow
def test_a_built_wheel_runs_the_demo_from_an_empty_directory(tmp_path) -> None:
    """pip install of the wheel, then `mailbot demo` in an empty directory, no other step:
    the default model is prepared on the way, into the user's data folder."""
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    [wheel] = dist.glob("mailbot-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # The dependencies (and the convert extra) come from this test run's environment; mailbot
    # itself only from the wheel.
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "deps.pth").write_text("\n".join(here) + "\n")
    install = subprocess.run([py, "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    where = subprocess.run([py, "-c", "import mailbot; print(mailbot.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert str(ROOT) not in where and str(env_dir) in where

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILBOT_", "PYTHON"))}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    env["HF_HUB_OFFLINE"] = "1"
    demo = subprocess.run([env_dir / "bin" / "mailbot", "demo", "--json"], cwd=empty, env=env,
                          capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stderr
    assert "preparing the default model" in demo.stderr
    report = json.loads(demo.stdout)
    drafted = [m for m in report["messages"] if m.get("draft")]
    assert len(drafted) >= 6
    home = tmp_path / "xdg" / "mailbot"
    assert report["database"] == str(home / "demo" / "demo.db")
    assert (home / "models").is_dir()
    assert not (home / "mailbot.db").exists()  # the demo keeps apart from a real database
    assert list(empty.iterdir()) == []
