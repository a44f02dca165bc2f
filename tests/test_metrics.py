"""`/metrics` and `/healthz` (the worker's listener and the WSGI app), and the systemd notify
protocol: READY=1, then WATCHDOG=1 pings while healthy, none once the main loop hangs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from mailbot.audit.events import record_event
from mailbot.audit.metrics import MetricsServer, metrics_app
from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Mailbox, Message
from mailbot.db.outcomes import DraftOutcome
from mailbot.db.session import Database
from mailbot.sdnotify import Notifier, Watchdog, watchdog_interval
from tests.support.audit_data import synthesize

ROOT = Path(__file__).resolve().parents[1]


def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(body: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_metrics_parse_and_show_what_the_tables_hold(database: Database) -> None:
    with database.session() as session:
        synthesize(session, 120, seed=3, days=5)
        box = session.scalars(select(Mailbox)).first()
        assert box is not None
        box.last_success_at = utcnow()
        message = session.scalars(select(Message)).first()
        assert message is not None
        record_event(session, "classify", "ok", message_pk=message.id, latency_ms=12.5)
        record_event(session, "route", "llm", message_pk=message.id, latency_ms=0.4)
        record_event(session, "llm", "unavailable", message_pk=message.id, latency_ms=30000)
        awaiting = session.scalar(
            select(func.count()).select_from(DraftRecord)
            .join(Message, Message.id == DraftRecord.message_pk)
            .where(Message.status == "drafted",
                   ~select(DraftOutcome.id).where(DraftOutcome.message_pk == DraftRecord.message_pk)
                   .exists()))
        statuses = dict(session.execute(select(Message.status, func.count())
                                        .group_by(Message.status)).all())
        success = box.last_success_at.timestamp()
    server = MetricsServer(metrics_app(database, cache_seconds=0), "127.0.0.1", 0).start()
    try:
        status, body = scrape(server.port, "/metrics")
        assert status == 200
        found = samples(body)
        events = {(s.labels["stage"], s.labels["outcome"]) for s in found["mailbot_events_total"]}
        assert {("classify", "ok"), ("route", "llm"), ("llm", "unavailable")} <= events
        buckets = [s for s in found["mailbot_stage_latency_seconds_bucket"]
                   if s.labels["stage"] == "llm"]
        assert any(s.labels["le"] == "+Inf" and s.value >= 1 for s in buckets)
        assert any(s.labels["outcome"] == "unavailable" for s in found["mailbot_llm_errors_total"])
        assert any(s.labels["route"] == "llm" for s in found["mailbot_escalations_total"])
        assert found["mailbot_drafts_awaiting_review"][0].value == awaiting > 0
        queue = {s.labels["status"]: s.value for s in found["mailbot_queue_messages"]}
        assert queue["fetched"] == statuses.get("fetched", 0)
        assert {s.labels["status"]: s.value for s in found["mailbot_messages"]} == statuses
        polls = {(s.labels["account"], s.labels["mailbox"]): s.value
                 for s in found["mailbot_mailbox_last_success_timestamp_seconds"]}
        assert len(polls) == 3 and pytest.approx(success) in polls.values()
        assert found["mailbot_database_up"][0].value == 1
        assert scrape(server.port, "/healthz") == (200, "ok\n")
        assert scrape(server.port, "/nothing")[0] == 404
    finally:
        server.stop()


def test_healthz_says_when_the_database_is_down(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    database = Database(f"postgresql+psycopg://nobody@127.0.0.1:{port}/none?connect_timeout=2")
    app = metrics_app(database, cache_seconds=0)
    server = MetricsServer(app, "127.0.0.1", 0).start()
    try:
        status, body = scrape(server.port, "/healthz")
        assert status == 503 and "database unavailable" in body
        status, body = scrape(server.port, "/metrics")
        assert status == 200 and samples(body)["mailbot_database_up"][0].value == 0
    finally:
        server.stop()
        database.dispose()


# --- systemd's notify protocol ---------------------------------------------------------------

WORKER = textwrap.dedent("""
    import os, sys, threading, time
    from mailbot.daemon import main_loop
    from mailbot.sdnotify import Notifier, Watchdog, watchdog_interval

    hang = sys.argv[1]
    notifier = Notifier()
    watchdog = Watchdog(notifier, watchdog_interval(),
                        lambda: (not os.path.exists(hang + ".sick"), "database unavailable"))
    notifier.ready("polling 1 mailbox(es)")

    def tick():
        if os.path.exists(hang):
            time.sleep(3600)  # a hung main loop

    main_loop(threading.Event(), watchdog, tick)
""")


class FakeSystemd:
    """The manager's side of the notify socket, restarting a worker whose pings stop."""

    def __init__(self, path: Path, watchdog_sec: float) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.watchdog_sec = watchdog_sec
        self.starts = 0

    def start(self, hang: Path) -> subprocess.Popen[bytes]:
        self.starts += 1
        env = {**os.environ, "NOTIFY_SOCKET": self.path, "PYTHONPATH": str(ROOT),
               "WATCHDOG_USEC": str(int(self.watchdog_sec * 1e6))}
        return subprocess.Popen([sys.executable, "-c", WORKER, str(hang)], env=env)

    def messages(self, seconds: float) -> list[str]:
        got, until = [], time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return got

    def until_ready(self, seconds: float) -> str:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for message in self.messages(0.2):
                if message.startswith("READY=1"):
                    return message
        return ""

    def supervise(self, process: subprocess.Popen[bytes], seconds: float) -> tuple[bool, list]:
        """Watch for `seconds`; kill the worker (as systemd does) when a ping is overdue."""
        got, last = [], time.monotonic()
        until = last + seconds
        while time.monotonic() < until:
            new = self.messages(0.1)
            got += new
            if any("WATCHDOG=1" in m or "READY=1" in m for m in new):
                last = time.monotonic()
            if time.monotonic() - last > self.watchdog_sec:
                process.kill()  # systemd sends SIGABRT, then SIGKILL
                process.wait(timeout=10)
                return True, got
        return False, got


def test_a_hung_worker_stops_feeding_the_watchdog_and_is_restarted(tmp_path: Path) -> None:
    systemd = FakeSystemd(tmp_path / "notify", watchdog_sec=1.0)
    hang = tmp_path / "hang"
    worker = systemd.start(hang)
    try:
        first = systemd.until_ready(60.0)
        assert first.startswith("READY=1") and "STATUS=polling 1 mailbox(es)" in first
        assert systemd.messages(2.0).count("WATCHDOG=1") >= 3  # every half second

        (tmp_path / "hang.sick").touch()  # healthy() says no: pings stop
        assert systemd.messages(0.6) in ([], ["WATCHDOG=1"])
        assert systemd.messages(1.5) == []
        (tmp_path / "hang.sick").unlink()
        assert "WATCHDOG=1" in systemd.messages(1.5)

        hang.touch()  # the main loop hangs
        restarted, got = systemd.supervise(worker, seconds=10)
        assert restarted, "no ping was missed"
        assert got.count("WATCHDOG=1") <= 1
        hang.unlink()
        worker = systemd.start(hang)
        assert systemd.until_ready(60.0).startswith("READY=1")
        assert "WATCHDOG=1" in systemd.messages(1.5)
        assert systemd.starts == 2
    finally:
        worker.kill()
        worker.wait(timeout=10)


def test_watchdog_is_off_without_systemd_and_for_a_child(monkeypatch) -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    watchdog = Watchdog(Notifier(), 30.0, lambda: (True, "ok"))
    assert not watchdog.enabled and not watchdog.feed()


def test_the_worker_serves_metrics_and_notifies_systemd(tmp_path: Path, imap_user,
                                                        sqlite_url: str) -> None:
    from tests.support.mail import support_email
    from tests.test_daemon import write_config

    imap_user.append_many([support_email(i) for i in range(3)])
    config = write_config(tmp_path, imap_user, sqlite_url, poll_interval=3600)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with config.open("a") as f:
        f.write(f'[metrics]\nenabled = true\nport = {port}\ncache_seconds = 0\n')
    systemd = FakeSystemd(tmp_path / "notify", watchdog_sec=2.0)
    env = {**os.environ, "NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "2000000",
           "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "mailbot", "--config", str(config), "run"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert systemd.until_ready(120.0).startswith("READY=1"), "the worker never got ready"
        assert systemd.messages(2.5).count("WATCHDOG=1") >= 2
        deadline, polled = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            found = samples(scrape(port, "/metrics")[1])
            polled = {s.labels["mailbox"]: s.value
                      for s in found.get("mailbot_mailbox_last_success_timestamp_seconds", [])}
            if polled.get("INBOX"):
                break
            time.sleep(0.2)
        assert polled["INBOX"] > time.time() - 300
        fetched = [s for s in found["mailbot_events_total"]
                   if s.labels["stage"] == "fetch" and s.labels["outcome"] == "ok"]
        assert fetched and fetched[0].value == 3
        assert scrape(port, "/healthz") == (200, "ok\n")
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert "STOPPING=1" in systemd.messages(0.5)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
