"""The managers' SQL views and `mailbot report`, on SQLite and PostgreSQL: their figures agree
with counts taken from the tables, with each other and with the reports; the documented
example queries run; no personal data shows through."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, text

from mailbot.audit.events import record_event
from mailbot.audit.reports import VIEWS, example_queries, percentile, store_prices
from mailbot.cli import cli
from mailbot.cli.common import run_cli
from mailbot.config import CostSettings
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Event, Mailbox, Message, MessageFacts
from mailbot.db.outcomes import DraftOutcome, HumanLabel
from mailbot.db.session import Database
from mailbot.ingest.ledger import NewMessage, add_messages, get_or_create_mailbox, sha256_hex
from tests.support.audit_data import synthesize

DOCS = Path(__file__).resolve().parents[1] / "docs" / "sql.md"
PRICES = CostSettings(currency="EUR", llm_input_per_million=2.0, llm_output_per_million=10.0,
                      chars_per_token=4.0, prompt_overhead_tokens=100, typical_output_tokens=50)


def rows(database: Database, sql: str, **params: Any) -> list[dict[str, Any]]:
    with database.session() as session:
        return [dict(r._mapping) for r in session.execute(text(sql), params)]


def day(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "mailbot.toml"
    path.write_text(f'data_dir = "{tmp_path / "var"}"\n[database]\nurl = "{url}"\n[cost]\n'
                    'currency = "EUR"\nllm_input_per_million = 2.0\nllm_output_per_million = 10.0\n'
                    'chars_per_token = 4.0\nprompt_overhead_tokens = 100\n'
                    'typical_output_tokens = 50\n')
    return path


def mailbot(config: Path, *args: str, capsys: Any) -> tuple[int, str]:
    capsys.readouterr()
    code = run_cli(cli, ["--config", str(config), *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return code, out


@pytest.fixture()
def audit(database: Database) -> Database:
    """A migrated database with 400 synthetic messages and their whole audit trail."""
    with database.session() as session:
        store_prices(session, PRICES)
        synthesize(session, 400, seed=11, days=21)
    return database


def test_daily_view_agrees_with_the_tables(audit: Database) -> None:
    expected: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    spent: dict[tuple[str, int], float] = defaultdict(float)
    with audit.session() as session:
        messages = {m.id: m for m in session.scalars(select(Message))}
        events = defaultdict(list)
        for e in session.scalars(select(Event).order_by(Event.id)):
            events[e.message_pk].append(e)
        drafts = {d.message_pk for d in session.scalars(select(DraftRecord))}
        for pk, m in messages.items():
            key = (m.received_at.date().isoformat(), m.mailbox_id)
            c = expected[key]
            stages = {e.stage: e for e in events[pk]}
            route = stages["route"].outcome if "route" in stages else None
            handoff = stages["settle"].details.get("handoff") if "settle" in stages else None
            c["messages"] += 1
            c["skipped"] += m.status == "skipped"
            c["failed"] += m.status in ("failed", "quarantined")
            c["handled"] += m.status not in ("fetched", "skipped")
            c["escalated"] += any(e.stage == "llm" for e in events[pk])
            c["handed_to_person"] += route == "human" or handoff is not None
            c["drafted_small_model"] += pk in drafts and route == "slm"
            c["drafted_cloud"] += pk in drafts and route == "llm"
            spent[key] += sum(e.cost or 0.0 for e in events[pk])
    got = rows(audit, "SELECT * FROM v_daily")
    assert len(got) == len(expected)
    for row in got:
        key = (day(row["day"]), row["mailbox_id"])
        for column, count in expected[key].items():
            assert row[column] == count, (key, column)
        assert row["spent"] == pytest.approx(spent[key])
        handled = expected[key]["handled"]
        assert row["small_model_share"] == (pytest.approx(
            expected[key]["drafted_small_model"] / handled) if handled else None)
        assert row["currency"] == "EUR"
    # Every kind of mail is in the sample.
    totals = sum((c for c in expected.values()), Counter())
    assert all(totals[k] > 0 for k in ("skipped", "failed", "escalated", "handed_to_person",
                                       "drafted_small_model", "drafted_cloud"))


def test_outcome_correction_and_escalation_views_agree_with_the_tables(audit: Database) -> None:
    with audit.session() as session:
        outcomes = Counter(o.outcome for o in session.scalars(select(DraftOutcome)))
        reasons = Counter(o.reason for o in session.scalars(select(DraftOutcome))
                          if o.outcome == "rejected")
        edits = [o.edit_distance for o in session.scalars(select(DraftOutcome))
                 if o.outcome == "sent_edited"]
        labels = Counter((h.previous, h.value) for h in session.scalars(select(HumanLabel)))
        route_reasons = Counter()
        handoffs = Counter()
        for e in session.scalars(select(Event).where(Event.stage.in_(["route", "settle"]))):
            if e.stage == "route":
                route_reasons.update(r["code"] for r in e.details.get("reasons", [])
                                     if r["action"] in ("llm", "human"))
            elif e.details.get("handoff"):
                handoffs[e.details["handoff"]] += 1
        llm_cost = sum(e.cost or 0 for e in session.scalars(select(Event)
                                                            .where(Event.stage == "llm")))
    got = rows(audit, "SELECT outcome, COUNT(*) AS n, SUM(sent_edited) AS edited, "
                      "SUM(rejected) AS rejected FROM v_draft_outcomes GROUP BY outcome")
    assert {r["outcome"]: r["n"] for r in got} == dict(outcomes)
    got = rows(audit, "SELECT reject_reason, COUNT(*) AS n FROM v_draft_outcomes "
                      "WHERE rejected = 1 GROUP BY reject_reason")
    assert {r["reject_reason"]: r["n"] for r in got} == dict(reasons)
    (mean,) = rows(audit, "SELECT AVG(edit_distance) AS m FROM v_draft_outcomes "
                          "WHERE sent_edited = 1")
    assert mean["m"] == pytest.approx(sum(edits) / len(edits))
    got = rows(audit, "SELECT from_value, to_value, COUNT(*) AS n FROM v_corrections "
                      "GROUP BY from_value, to_value")
    assert {(r["from_value"], r["to_value"]): r["n"] for r in got} == dict(labels)
    got = rows(audit, "SELECT source, reason, COUNT(*) AS n FROM v_escalations "
                      "GROUP BY source, reason")
    assert {r["reason"]: r["n"] for r in got if r["source"] == "route"} == dict(route_reasons)
    assert {r["reason"]: r["n"] for r in got if r["source"] == "handoff"} == dict(handoffs)
    # One first reason per message: summing over them counts each message's cost once.
    (first,) = rows(audit, "SELECT COUNT(*) AS n, COUNT(DISTINCT message_pk) AS m, "
                           "SUM(llm_cost) AS cost FROM v_escalations WHERE first_reason = 1")
    assert first["n"] == first["m"]
    (escalated,) = rows(audit, "SELECT SUM(llm_cost) AS cost FROM v_messages")
    assert escalated["cost"] == pytest.approx(llm_cost)
    assert first["cost"] <= llm_cost + 1e-9


def test_a_message_with_known_figures(database: Database) -> None:
    received = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    with database.session() as session:
        store_prices(session, PRICES)
        box = get_or_create_mailbox(session, "support", "INBOX")
        raw = b"Subject: Where is my parcel\r\nFrom: ann@example.org\r\n\r\nHello"
        (m,) = add_messages(session, box, [NewMessage(
            uidvalidity=1, uid=1, raw=raw, size=len(raw), sha256=sha256_hex(raw),
            message_id="<a@example.org>", subject="Where is my parcel",
            sender="ann@example.org", received_at=received)])
        m.status = "drafted"
        record_event(session, "parse", "ok", message_pk=m.id, mailbox_id=box.id,
                     details={"text_chars": 401})
        record_event(session, "classify", "ok", message_pk=m.id, mailbox_id=box.id, cost=0.001,
                     details={"intent": {"label": "order_status", "confidence": 0.93},
                              "language": "de"})
        record_event(session, "route", "slm", message_pk=m.id, mailbox_id=box.id,
                     details={"route": "slm", "codes": [], "reasons": []})
        draft = DraftRecord(message_pk=m.id, token="t1", reply_message_id="<r@x>",
                            template="replies/order_status.de.txt.j2", language="de",
                            subject="Re: Where is my parcel", body="Guten Tag", mime=b"x",
                            model="template", created_at=received + timedelta(seconds=90))
        session.add(draft)
        session.flush()
        session.add(DraftOutcome(message_pk=m.id, draft_id=draft.id, outcome="sent_edited",
                                 edit_distance=0.25, agent="alice", proposed_text="Guten Tag",
                                 sent_text="Guten Tag, Ann", created_at=received + timedelta(
                                     minutes=30)))
    (row,) = rows(database, "SELECT * FROM v_messages")
    assert row["intent"] == "order_status" and row["intent_confidence"] == pytest.approx(0.93)
    assert row["language"] == "de" and row["route"] == "slm" and row["handled"] == 1
    assert row["time_to_draft_s"] == pytest.approx(90, abs=0.01)
    assert row["time_to_first_send_s"] == pytest.approx(1800, abs=0.01)
    assert (row["outcome"], row["edit_distance"], row["agent"]) == ("sent_edited", 0.25, "alice")
    # 100 prompt tokens + ceil(401 / 4) = 201 in, 50 out, at 2 and 10 per million.
    assert (row["all_cloud_tokens_in"], row["all_cloud_tokens_out"]) == (201, 50)
    assert row["all_cloud_cost"] == pytest.approx((201 * 2.0 + 50 * 10.0) / 1e6)
    assert row["cost"] == pytest.approx(0.001)


def test_views_show_no_personal_data(audit: Database) -> None:
    secret = "Zebulon-Quaxx"
    with audit.session() as session:
        m = session.scalars(select(Message).where(Message.status == "drafted")).first()
        assert m is not None
        m.subject, m.sender = f"Refund {secret}", f"{secret}@example.org"
        session.merge(MessageFacts(message_pk=m.id, data={"order_id": secret}))
        d = session.scalars(select(DraftRecord).where(DraftRecord.message_pk == m.id)).one()
        d.body, d.subject = f"Dear {secret}", f"Re: {secret}"
        session.add(DraftOutcome(message_pk=m.id, draft_id=d.id, outcome="rejected",
                                 reason="other", note=secret, proposed_text=secret,
                                 sent_text=secret, sent_message_id=f"<{secret}@x>"))
        session.add(HumanLabel(message_pk=m.id, kind="field", name="order_id", value=secret,
                               previous=secret + "1"))
    for view in VIEWS:
        for row in rows(audit, f"SELECT * FROM {view}"):
            assert not any(secret in str(v) for v in row.values()), view


def test_documented_queries_run_on_this_database(audit: Database) -> None:
    queries = example_queries(DOCS.read_text(), audit.engine.dialect.name)
    assert len(queries) == 10
    for title, sql in queries:
        found = rows(audit, sql)
        if not title.startswith("2."):  # "last month" depends on today's date
            assert found, title
    # The median of question 3 is the one the latency report computes.
    medians = {r["mailbox"]: r["median_first_response_s"] for r in rows(audit, queries[2][1])}
    times = defaultdict(list)
    for r in rows(audit, "SELECT account, mailbox, time_to_first_send_s AS t FROM v_messages "
                         "WHERE time_to_first_send_s IS NOT NULL"):
        times[f"{r['account']}/{r['mailbox']}"].append(r["t"])
    assert medians == pytest.approx({k: percentile(v, 50) for k, v in times.items()})


def test_reports_print_the_views_figures(audit: Database, tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, audit.url)
    _, out = mailbot(config, "report", "volume", "--by", "day", "--json", capsys=capsys)
    report = json.loads(out)
    daily: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows(audit, "SELECT * FROM v_daily"):
        daily[day(r["day"])].update({k: r[k] for k in ("messages", "handled", "skipped",
                                                       "escalated", "handed_to_person")})
    assert {r["day"]: {k: r[k] for k in daily[r["day"]]} for r in report["rows"]} == daily

    # The legacy cost report (events of the window) and the views agree over all time.
    _, out = mailbot(config, "report", "cost", "--json", capsys=capsys)
    legacy = json.loads(out)
    (total,) = rows(audit, "SELECT SUM(handled) AS handled, SUM(escalated) AS escalated, "
                           "SUM(spent) AS spent, SUM(all_cloud_estimate) AS estimate FROM v_daily")
    assert legacy["messages"] == total["handled"]
    assert legacy["escalated"] == total["escalated"]
    assert legacy["spent"] == pytest.approx(total["spent"], abs=1e-6)
    assert legacy["all_cloud_estimate"] == pytest.approx(total["estimate"], abs=1e-6)
    _, out = mailbot(config, "report", "cost", "--by", "mailbox", "--json", capsys=capsys)
    by_mailbox = json.loads(out)["rows"]
    assert sum(r["handled"] for r in by_mailbox) == total["handled"]
    assert sum(r["all_cloud_estimate"] for r in by_mailbox) == pytest.approx(total["estimate"])

    _, out = mailbot(config, "report", "drafts", "--by", "intent", "--json", capsys=capsys)
    drafts = {r["intent"]: r for r in json.loads(out)["rows"]}
    for r in rows(audit, "SELECT intent, COUNT(*) AS n, SUM(sent_edited) AS e, SUM(rejected) "
                         "AS x FROM v_draft_outcomes GROUP BY intent"):
        assert (drafts[r["intent"]]["outcomes"], drafts[r["intent"]]["sent_edited"],
                drafts[r["intent"]]["rejected"]) == (r["n"], r["e"], r["x"])

    _, out = mailbot(config, "report", "escalations", "--by", "week", "--csv", capsys=capsys)
    lines = out.splitlines()
    assert lines[0].startswith("week,reason,action,messages,llm_calls")
    (count,) = rows(audit, "SELECT COUNT(DISTINCT message_pk) AS n FROM v_escalations")
    assert len(lines) > 1

    _, out = mailbot(config, "report", "latency", "--by", "mailbox", capsys=capsys)
    assert "median_first_response_s" in out.splitlines()[0]
    assert len(out.splitlines()) == 4  # a header and three mailboxes

    _, out = mailbot(config, "report", "automation", "--since", "2026-11-20", "--until",
                     "2026-11-23", "--json", capsys=capsys)
    assert [r["day"] for r in json.loads(out)["rows"]] == ["2026-11-20", "2026-11-21",
                                                          "2026-11-22"]


def test_report_refuses_a_backwards_window(audit: Database, tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, audit.url)
    code = run_cli(cli, ["--config", str(config), "report", "volume", "--since", "2026-11-20",
                         "--until", "2026-11-01"])
    assert code == 64
    assert "--until must be a later day than --since" in capsys.readouterr().err


def test_downgrade_drops_the_views(database: Database) -> None:
    assert set(VIEWS) <= set(inspect(database.engine).get_view_names())
    database.downgrade("0007")
    assert not set(VIEWS) & set(inspect(database.engine).get_view_names())
    assert "cost_prices" not in inspect(database.engine).get_table_names()
    database.upgrade()
    assert set(VIEWS) <= set(inspect(database.engine).get_view_names())
    with database.session() as session:
        assert session.scalar(select(Mailbox.id)) is None
