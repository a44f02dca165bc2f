"""The managers' dashboard and the desk's /metrics, on SQLite and PostgreSQL: the figures on
the page and in its CSV downloads are `mailbot report`'s and agree with counts taken from the
tables; an empty database renders; agents are refused; labels from the data are escaped;
/metrics parses and is served only to the addresses allowed."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import lxml.html
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from mailbot.audit.reports import store_prices
from mailbot.cli import cli
from mailbot.cli.common import run_cli
from mailbot.config import CostSettings, load_config
from mailbot.db.artifacts import Artifact
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Account, Event, Mailbox, Message
from mailbot.db.outcomes import DraftOutcome
from mailbot.db.session import Database
from mailbot.web import auth
from mailbot.web.app import create_app
from tests.support.audit_data import synthesize
from tests.support.desk import DeskProcess

SINCE, UNTIL = "2026-11-12", "2026-11-26"  # inside the 21 synthetic days ending 2026-11-30
PRICES = CostSettings(currency="EUR", llm_input_per_million=2.0, llm_output_per_million=10.0,
                      chars_per_token=4.0, prompt_overhead_tokens=100, typical_output_tokens=50)
USERS = {"agent": ("alice", "alice-password-1"), "manager": ("mona", "mona-password-1"),
         "admin": ("root-admin", "admin-password-1")}
CHARTS = ("volume", "automation", "escalations", "drafts", "edits", "cost")


def write_config(directory: Path, url: str, extra: str = "") -> Path:
    path = directory / "mailbot.toml"
    path.write_text(f'data_dir = "{directory / "var"}"\n[database]\nurl = "{url}"\n[cost]\n'
                    'currency = "EUR"\nllm_input_per_million = 2.0\nllm_output_per_million = 10.0\n'
                    'chars_per_token = 4.0\nprompt_overhead_tokens = 100\n'
                    'typical_output_tokens = 50\n[web]\nmetrics = true\n' + extra)
    return path


def add_users(database: Database) -> None:
    with database.session() as session:
        for role, (name, password) in USERS.items():
            auth.add_user(session, name, role, password)


def make_app(database: Database, tmp_path: Path) -> tuple[Flask, Path]:
    config_path = write_config(tmp_path, database.url)
    return create_app(load_config(config_path), database), config_path


def login(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      client.get("/login").get_data(as_text=True))
    assert token is not None
    name, password = USERS[role]
    answer = client.post("/login", data={"username": name, "password": password,
                                         "csrf_token": token.group(1)})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


def report_csv(config: Path, name: str, capsys: Any, *args: str) -> str:
    capsys.readouterr()
    code = run_cli(cli, ["--config", str(config), "report", name, "--csv", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def page(client: FlaskClient, query: str = "") -> Any:
    answer = client.get(f"/dashboard{query}")
    assert answer.status_code == 200, answer.get_data(as_text=True)[:2000]
    return lxml.html.fromstring(answer.get_data())


def tips(doc: Any, chart: str) -> dict[str, float]:
    """The hover texts of a chart's marks: {"2026-11-12 · handled": 13.0, ...}."""
    found = {}
    for title in doc.xpath(f'//figure[@data-chart="{chart}"]//rect/title'):
        label, _, value = title.text.rpartition(": ")
        found[label] = float(value.split()[0].rstrip("%").replace(",", ""))
    return found


def mailbox_id(database: Database, account: str, folder: str) -> int:
    with database.session() as session:
        return int(session.scalar(select(Mailbox.id).join(Account).where(
            Account.name == account, Mailbox.name == folder)))


def in_window(moment: datetime, since: str = SINCE, until: str = UNTIL) -> bool:
    return date.fromisoformat(since) <= moment.astimezone(UTC).date() < date.fromisoformat(until)


@pytest.fixture()
def audit(database: Database) -> Database:
    """400 synthetic messages with their whole audit trail, and the desk's users."""
    with database.session() as session:
        store_prices(session, PRICES)
        synthesize(session, 400, seed=11, days=21)
    add_users(database)
    return database


def test_agents_are_refused_and_see_no_link(audit: Database, tmp_path: Path) -> None:
    app, _ = make_app(audit, tmp_path)
    agent = login(app, "agent")
    assert agent.get("/dashboard").status_code == 403
    assert agent.get("/dashboard/volume.csv").status_code == 403
    assert "/dashboard" not in agent.get("/").get_data(as_text=True)
    assert app.test_client().get("/dashboard").status_code == 302  # to the login page
    for role in ("manager", "admin"):
        client = login(app, role)
        nav = lxml.html.fromstring(client.get("/").get_data()).xpath("//header//nav//a/@href")
        assert "/dashboard" in nav
        assert client.get("/dashboard").status_code == 200


def test_csv_downloads_are_the_reports(audit: Database, tmp_path: Path, capsys: Any) -> None:
    app, config = make_app(audit, tmp_path)
    client = login(app, "manager")
    box = mailbox_id(audit, "support", "Billing")
    for query, args in ((f"?since={SINCE}&until={UNTIL}", ["--since", SINCE, "--until", UNTIL]),
                        (f"?since={SINCE}&until={UNTIL}&mailbox={box}",
                         ["--since", SINCE, "--until", UNTIL, "--mailbox", "support/Billing"])):
        for chart in ("volume", "escalations", "drafts", "cost"):
            answer = client.get(f"/dashboard/{chart}.csv{query}")
            assert answer.status_code == 200
            assert answer.mimetype == "text/csv"
            assert f'filename="mailbot-{chart}-{SINCE}-{UNTIL}.csv"' in \
                answer.headers["Content-Disposition"]
            expected = report_csv(config, chart, capsys, *args)
            assert answer.get_data(as_text=True) == expected
            assert expected.count("\n") > 3  # a header and rows, not an empty report
        # Automation: the report's columns, with the volume report's messages and skipped.
        got = client.get(f"/dashboard/automation.csv{query}").get_data(as_text=True)
        automation = report_csv(config, "automation", capsys, *args).splitlines()
        volume = [r.split(",") for r in report_csv(config, "volume", capsys, *args).splitlines()]
        lines = got.splitlines()
        assert lines[0] == automation[0] + ",messages,skipped"
        assert [line.rsplit(",", 2)[0] for line in lines] == automation
        assert [line.rsplit(",", 2)[1:] for line in lines[1:]] == [[v[1], v[3]]
                                                                     for v in volume[1:]]
    capsys.readouterr()
    assert run_cli(cli, ["--config", str(config), "report", "volume", "--mailbox",
                         "support/Nowhere"]) == 64  # ExitCode.USAGE
    assert "no such mailbox (known: shop-de/INBOX, support/Billing, support/INBOX)" in \
        capsys.readouterr().err
    edits = client.get(f"/dashboard/edits.csv?since={SINCE}&until={UNTIL}").get_data(
        as_text=True).splitlines()
    assert edits[0] == "day,sent_edited,mean_edit_distance,median_edit_distance"
    assert len(edits) > 3


def test_figures_on_the_page_agree_with_the_tables(audit: Database, tmp_path: Path) -> None:
    app, _ = make_app(audit, tmp_path)
    client = login(app, "manager")
    box = mailbox_id(audit, "support", "INBOX")
    doc = page(client, f"?since={SINCE}&until={UNTIL}&mailbox={box}")
    handled: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    with audit.session() as session:
        mine = {m.id: m for m in session.scalars(select(Message).where(
            Message.mailbox_id == box))}
        for m in mine.values():
            if in_window(m.received_at):
                day = m.received_at.astimezone(UTC).date().isoformat()
                handled[day] += m.status not in ("fetched", "skipped")
                skipped[day] += m.status == "skipped"
        for o in session.scalars(select(DraftOutcome)):
            if o.message_pk in mine and in_window(o.created_at):
                outcomes["rejected: " + o.reason.replace("_", " ") if o.outcome == "rejected"
                         else o.outcome.replace("_", " ")] += 1
        for e in session.scalars(select(Event).where(Event.stage == "route")):
            if e.message_pk in mine and in_window(e.created_at):
                for code in {(r["code"], r["action"]) for r in e.details.get("reasons", [])
                             if r["action"] in ("llm", "human")}:
                    reasons[f"{code[0]} → {'cloud LLM' if code[1] == 'llm' else 'person'}"] += 1
    assert sum(handled.values()) and outcomes and reasons  # the window holds every kind
    volume = tips(doc, "volume")
    assert {k.split(" · ")[0]: v for k, v in volume.items() if k.endswith("handled")} == \
        {d: n for d, n in handled.items() if n}
    assert {k.split(" · ")[0]: v for k, v in volume.items() if k.endswith("skipped")} == \
        {d: n for d, n in skipped.items() if n}
    drafts = tips(doc, "drafts")
    assert {k: v for k, v in drafts.items() if v} == dict(outcomes)
    escalations = tips(doc, "escalations")
    assert all(escalations[k] == n for k, n in reasons.items()), (escalations, reasons)
    tile = doc.xpath('//div[@class="tile"][.//span[@class="tile-label"]'
                     '[text()="emails received"]]/span[@class="tile-value"]')[0]
    assert int(tile.text.replace(",", "")) == sum(1 for m in mine.values()
                                                  if in_window(m.received_at))
    # The shares of each day add up to the whole day's mail.
    shares: Counter[str] = Counter()
    for key, value in tips(doc, "automation").items():
        shares[key.split(" · ")[0]] += value
    assert shares and all(abs(total - 100) < 0.5 for total in shares.values())
    # Each chart is described for a screen reader, and has its table.
    for chart in CHARTS:
        figure = doc.xpath(f'//figure[@data-chart="{chart}"]')[0]
        svg = figure.xpath(".//svg")[0]
        assert svg.get("role") == "img"
        labelled = svg.get("aria-labelledby").split()
        assert all(figure.xpath(f'.//*[@id="{i}"]')[0].text_content() for i in labelled)
        assert figure.xpath(".//details/table//tbody/tr")


def test_an_empty_database_renders(database: Database, tmp_path: Path) -> None:
    add_users(database)
    app, _ = make_app(database, tmp_path)
    client = login(app, "manager")
    for query in ("", "?since=&until=", f"?since={SINCE}&until={UNTIL}"):
        doc = page(client, query)
        for chart in CHARTS:
            figure = doc.xpath(f'//figure[@data-chart="{chart}"]')[0]
            assert figure.xpath('.//p[@class="empty"]')[0].text == "No data for this range."
            assert not figure.xpath(".//svg")
        heads = doc.xpath('//section[@data-chart="models"]//tbody/tr/td[1]/text()')
        assert heads == ["seed head"] * 3
    answer = client.get("/dashboard/volume.csv")
    assert answer.get_data(as_text=True) == \
        "day,messages,handled,skipped,failed,drafted,escalated,handed_to_person\n"


def test_the_default_range_is_the_last_30_days_and_long_ranges_go_by_week(
        audit: Database, tmp_path: Path, capsys: Any) -> None:
    app, config = make_app(audit, tmp_path)
    client = login(app, "manager")
    doc = page(client)
    today = datetime.now(UTC).date()
    assert doc.xpath('//input[@name="until"]/@value') == [
        date.fromordinal(today.toordinal() + 1).isoformat()]
    assert doc.xpath('//input[@name="since"]/@value') == [
        date.fromordinal(today.toordinal() - 29).isoformat()]
    since, until = "2026-08-01", "2026-12-01"
    got = client.get(f"/dashboard/volume.csv?since={since}&until={until}").get_data(as_text=True)
    assert got.startswith("week,")
    assert got == report_csv(config, "volume", capsys, "--by", "week", "--since", since,
                             "--until", until)
    weeks = [t for t in tips(page(client, f"?since={since}&until={until}"), "volume")]
    assert weeks and all(date.fromisoformat(w.split(" · ")[0]).weekday() == 0 for w in weeks)
    # No bounds at all: the range is the mail's.
    all_time = client.get("/dashboard/volume.csv?since=&until=").get_data(as_text=True)
    assert all_time == report_csv(config, "volume", capsys)


def test_a_bad_filter_says_what_is_wrong(audit: Database, tmp_path: Path) -> None:
    app, _ = make_app(audit, tmp_path)
    client = login(app, "manager")
    for query, message in (("?since=2026-11-20&until=2026-11-10", "until must be a later day"),
                           ("?since=yesterday", "is not a day"),
                           ("?mailbox=9999", "no such mailbox")):
        answer = client.get(f"/dashboard{query}")
        assert answer.status_code == 400 and message in answer.get_data(as_text=True)
        assert client.get(f"/dashboard/volume.csv{query}").status_code == 400
    assert client.get("/dashboard/nothing.csv").status_code == 404


def test_labels_from_the_data_are_escaped(audit: Database, tmp_path: Path,
                                          capsys: Any) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    with audit.session() as session:
        box = session.scalars(select(Mailbox).order_by(Mailbox.id)).first()
        assert box is not None
        box.name = "<svg onload=alert(2)>"
        when = datetime(2026, 11, 20, 10, tzinfo=UTC)
        for n, code in enumerate((hostile, '=HYPERLINK("http://x")')):
            pk = session.scalar(select(func.max(Message.id))) + 1
            session.add(Message(id=pk, mailbox_id=box.id, uidvalidity=1, uid=90000 + n,
                                sha256=f"{pk:064x}", size=100, received_at=when,
                                fetched_at=when, status="needs_human", updated_at=when,
                                server_action_done=True, attempts=0))
            session.flush()
            session.add(Event(message_pk=pk, mailbox_id=box.id, stage="route", outcome="llm",
                              details={"route": "llm", "codes": [code], "reasons": [
                                  {"code": code, "text": "x", "action": "llm",
                                   "details": {}}]}, actor="worker", created_at=when))
    app, config = make_app(audit, tmp_path)
    client = login(app, "manager")
    body = client.get(f"/dashboard?since={SINCE}&until={UNTIL}").get_data(as_text=True)
    assert "<img src=x" not in body and "<svg onload" not in body
    assert "&lt;img src=x onerror=alert(1)&gt; → cloud LLM" in body
    assert "&lt;svg onload=alert(2)&gt;" in body  # the mailbox menu
    got = client.get(f"/dashboard/escalations.csv?since={SINCE}&until={UNTIL}").get_data(
        as_text=True)
    assert "'=HYPERLINK" in got and ",=HYPERLINK" not in got
    assert got == report_csv(config, "escalations", capsys, "--since", SINCE, "--until", UNTIL)


def test_model_versions_in_service_are_the_history(audit: Database, tmp_path: Path,
                                                   capsys: Any) -> None:
    import json

    with audit.session() as session:
        for version, promoted, accuracy in (("20261101T080000-aaaaaa", True, 0.84),
                                            ("20261120T080000-bbbbbb", True, 0.91),
                                            ("20261125T080000-cccccc", False, 0.70)):
            session.add(Artifact(kind="head", name="intent", version=version,
                                 path=f"heads/intent/{version}", promoted=promoted,
                                 created_at=datetime(2026, 11, int(version[6:8]), 8, tzinfo=UTC),
                                 metrics={"source": "learn", "examples": 640,
                                          "cv_accuracy": accuracy,
                                          "learn": {"after": {"accuracy": accuracy - 0.02,
                                                              "escalated": 0.125}}}))
    app, config = make_app(audit, tmp_path)
    client = login(app, "admin")
    doc = page(client)
    rows = {r.xpath("th/text()")[0]: [c.text_content() for c in r.xpath("td")]
            for r in doc.xpath('//section[@data-chart="models"]//tbody/tr')}
    assert rows["intent"][0] == "20261120T080000-bbbbbb"
    assert rows["intent"][4:8] == ["91.0%", "89.0%", "12.5%", "3"]
    assert rows["priority"][0] == "seed head"
    capsys.readouterr()
    assert run_cli(cli, ["--config", str(config), "model", "history", "intent", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    serving = next(v for v in history["versions"] if v["serving"])
    lines = client.get("/dashboard/models.csv").get_data(as_text=True).splitlines()
    assert lines[0] == ("head,version,created_at,source,examples,cv_accuracy,holdout_accuracy,"
                        "escalated,versions_recorded")
    assert lines[1] == ",".join(str(serving[k]) for k in (
        "version", "created_at", "source", "examples", "cv_accuracy", "holdout_accuracy",
        "escalated")).join(["intent,", ",3"])


# --- /metrics in the desk --------------------------------------------------------------------


def samples(body: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_metrics_in_the_desk(audit: Database, tmp_path: Path) -> None:
    app, _ = make_app(audit, tmp_path)
    client = login(app, "manager")
    assert client.get(f"/dashboard?since={SINCE}&until={UNTIL}").status_code == 200
    with audit.session() as session:
        awaiting = session.scalar(
            select(func.count()).select_from(DraftRecord)
            .join(Message, Message.id == DraftRecord.message_pk)
            .where(Message.status == "drafted", ~select(DraftOutcome.id).where(
                DraftOutcome.message_pk == DraftRecord.message_pk).exists()))
        needs_human = session.scalar(select(func.count()).select_from(Message)
                                     .where(Message.status == "needs_human"))
    scraper = app.test_client()  # no login: Prometheus has none
    answer = scraper.get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    found = samples(answer.get_data(as_text=True))
    assert found["mailbot_drafts_awaiting_review"][0].value == awaiting > 0
    assert found["mailbot_needs_human_messages"][0].value == needs_human > 0
    assert found["mailbot_database_up"][0].value == 1
    pages = {(s.labels["endpoint"], s.labels["status"]): s.value
             for s in found["mailbot_web_requests_total"]}
    assert pages[("dashboard", "200")] >= 1 and pages[("login", "302")] >= 1
    assert any(s.labels["endpoint"] == "dashboard"
               for s in found["mailbot_web_request_seconds_count"])
    assert scraper.get("/healthz").get_data(as_text=True) == "ok\n"
    # Only the allowed addresses, and never through a reverse proxy.
    outside = scraper.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert outside.status_code == 403 and b"mailbot_" not in outside.data
    proxied = scraper.get("/metrics", headers={"X-Forwarded-For": "198.51.100.4"})
    assert proxied.status_code == 403
    assert scraper.get("/healthz", headers={"Forwarded": "for=198.51.100.4"}).status_code == 403


def test_metrics_are_off_unless_enabled_and_follow_the_allow_list(sqlite_database: Database,
                                                                  tmp_path: Path) -> None:
    off = write_config(tmp_path, sqlite_database.url).read_text().replace(
        "metrics = true", "metrics = false")
    (tmp_path / "off.toml").write_text(off)
    app = create_app(load_config(tmp_path / "off.toml"), sqlite_database)
    assert app.test_client().get("/metrics").status_code == 404
    allowed = write_config(tmp_path, sqlite_database.url,
                           'metrics_allow = ["192.0.2.0/24"]\n')
    app = create_app(load_config(allowed), sqlite_database)
    client = app.test_client()
    assert client.get("/metrics").status_code == 403  # loopback is no longer on the list
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200
    bad = write_config(tmp_path, sqlite_database.url, 'metrics_allow = ["everyone"]\n')
    with pytest.raises(Exception, match="metrics_allow: 'everyone'"):
        load_config(bad)


def test_a_real_desk_process_serves_metrics(sqlite_database: Database, tmp_path: Path) -> None:
    with sqlite_database.session() as session:
        synthesize(session, 40, seed=2, days=3)
    config = write_config(tmp_path, sqlite_database.url)
    web = DeskProcess(config, tmp_path / "web.log").start()
    try:
        answer = requests.get(web.url + "/metrics", timeout=30)
        assert answer.status_code == 200
        found = samples(answer.text)
        assert found["mailbot_drafts_awaiting_review"][0].value > 0
        assert requests.get(web.url + "/healthz", timeout=30).text == "ok\n"
        # The header of a proxy in front of the desk reaches it, and is refused.
        proxied = requests.get(web.url + "/metrics", timeout=30,
                               headers={"X-Forwarded-For": "198.51.100.4"})
        assert proxied.status_code == 403
        again = samples(requests.get(web.url + "/metrics", timeout=30).text)
        statuses = {(s.labels["endpoint"]) for s in again.get("mailbot_web_requests_total", [])}
        assert "login" not in statuses  # /metrics itself is not a desk page
        assert requests.get(web.url + "/login", timeout=30).status_code == 200
        after = samples(requests.get(web.url + "/metrics", timeout=30).text)
        assert any(s.labels["endpoint"] == "login" and s.labels["status"] == "200"
                   for s in after["mailbot_web_requests_total"])
    finally:
        web.stop()
