"""A synthetic audit log with a realistic shape, for the managers' views and their benchmark.

Each message gets the rows and events the pipeline writes (mailbot/pipeline/record.py) and
the summary row `record_event` keeps (rebuilt from the events at the end):
fetch, parse (with `text_chars`), classify (the real details' shape), extract, retrieve,
route (codes and reasons), the cloud calls of escalated mail with their `llm_requests`,
draft, settle (with the hand-off code), the outbox's deliver and server_action; then what
the review desk writes: draft outcomes (sent unchanged, edited with an edit distance,
rejected with a reason, discarded) and intent corrections. Distributions follow a support
mailbox: most mail routine and on the small model, about 12% escalated, 10% for a person,
8% auto-replies and bounces, weekdays busier than weekends.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from mailbot.audit.stats import rebuild_message_stats
from mailbot.db.drafts import DraftRecord
from mailbot.db.llm_records import LLMRequest
from mailbot.db.models import Account, Event, Mailbox, Message
from mailbot.db.outcomes import DraftOutcome, HumanLabel

INTENTS = {"order_status": 22, "refund": 14, "shipping": 13, "billing": 10, "cancellation": 8,
           "account_access": 9, "technical_problem": 8, "product_question": 7, "complaint": 4,
           "feedback": 3, "other": 2}
LANGUAGES = {"en": 70, "de": 15, "es": 8, "fr": 7}
LLM_REASONS = {"low_confidence": 40, "out_of_scope": 15, "legal_threat": 5,
               "angry_high_priority": 12, "long_multi_question": 15, "repeat_contact": 10,
               "data_protection": 3}
HUMAN_REASONS = {"vip_sender": 30, "no_cloud": 20, "llm_not_configured": 10, "legal_threat": 40}
HANDOFFS = {"llm_failed": 40, "budget_exhausted": 20, "unsafe_draft": 30, "no_draft": 10}
REJECT = {"wrong_intent": 35, "wrong_facts": 30, "wrong_tone": 15, "should_not_answer": 10,
          "other": 10}
AGENTS = ["alice", "bob", "chen", "dana", "emil"]
MAILBOXES = [("support", "INBOX"), ("support", "Billing"), ("shop-de", "INBOX")]


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


@dataclass
class Generated:
    """How many of each row were written."""

    messages: int = 0
    events: int = 0
    drafts: int = 0
    outcomes: int = 0
    labels: int = 0
    llm_requests: int = 0


class _Ids:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def next(self, table: str) -> int:
        self.values[table] = self.values.get(table, 0) + 1
        return self.values[table]


def _classify_details(rng: random.Random, intent: str, language: str, confidence: float,
                      oos: float) -> dict[str, Any]:
    runner = rng.choice([i for i in INTENTS if i != intent])
    return {
        "intent": {"label": intent, "confidence": round(confidence, 4), "runner_up": runner,
                   "runner_up_confidence": round((1 - confidence) * 0.7, 4)},
        "priority": {"label": rng.choice(["low", "normal", "normal", "high"]),
                     "confidence": 0.9, "runner_up": "low", "runner_up_confidence": 0.05},
        "sentiment": {"label": rng.choice(["neutral", "neutral", "negative", "positive"]),
                      "confidence": 0.95, "runner_up": "negative", "runner_up_confidence": 0.03},
        "language": language, "out_of_scope_score": round(oos, 4), "out_of_scope": oos > 0.8,
        "model": "all-MiniLM-L6-v2", "model_version": "6c947f22b415",
        "head_version": "seed-4ee09fdb226d", "truncated": False,
        "head_versions": {"intent": "seed-4ee09fdb226d", "priority": "seed-1a2dcc2bf757",
                          "sentiment": "seed-56b99b11764a"},
        "cpu_seconds": 0.011,
    }


def _passages(rng: random.Random) -> list[dict[str, Any]]:
    return [{"id": rng.randint(1, 400), "source": "/srv/kb/orders.md",
             "heading": "Orders > Order status", "version": 1, "score": round(rng.random(), 4)}
            for _ in range(4)]


Writer = Callable[[Session, type[Any], list[dict[str, Any]]], None]


def insert_rows(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Write rows through SQLAlchemy (any database)."""
    session.execute(insert(model), rows)


def synthesize(session: Session, messages: int, *, seed: int = 7, days: int = 90,
               end: datetime | None = None, batch: int = 5000,
               writer: Writer = insert_rows) -> Generated:
    """Write `messages` synthetic messages with everything the pipeline and the desk record."""
    rng = random.Random(seed)
    end = end or datetime(2026, 11, 30, tzinfo=UTC)
    start = end - timedelta(days=days)
    counts = Generated()
    boxes = []
    accounts: dict[str, int] = {}
    for account, folder in MAILBOXES:
        if account not in accounts:
            row = Account(name=account, created_at=start)
            session.add(row)
            session.flush()
            accounts[account] = row.id
        box = Mailbox(account_id=accounts[account], name=folder, uidvalidity=1, last_uid=0)
        session.add(box)
        session.flush()
        boxes.append(box.id)
    ids = _Ids()
    # Continue after whatever is already there (ids are given here to link the rows).
    for table, model in (("messages", Message), ("events", Event), ("drafts", DraftRecord),
                         ("draft_outcomes", DraftOutcome), ("human_labels", HumanLabel),
                         ("llm_requests", LLMRequest)):
        ids.values[table] = int(session.scalar(select(func.max(model.id))) or 0)
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in (
        "messages", "events", "drafts", "draft_outcomes", "human_labels", "llm_requests")}

    def flush() -> None:
        for table, model in (("messages", Message), ("events", Event), ("drafts", DraftRecord),
                             ("llm_requests", LLMRequest), ("draft_outcomes", DraftOutcome),
                             ("human_labels", HumanLabel)):
            if rows[table]:
                writer(session, model, rows[table])
                rows[table].clear()

    for n in range(messages):
        for event in _one_message(rng, n, boxes, start, days, ids, rows, counts):
            rows["events"].append(event)
            counts.events += 1
        if (n + 1) % batch == 0:
            flush()
    flush()
    session.flush()
    # The events were written directly, not through record_event: sum them up as it would.
    rebuild_message_stats(session)
    if session.get_bind().dialect.name == "postgresql":  # ids were given: move the sequences on
        for table in rows:
            session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                 f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"))
    return counts


def _when(rng: random.Random, start: datetime, days: int) -> datetime:
    while True:
        day = rng.randrange(days)
        moment = start + timedelta(days=day, seconds=rng.randrange(86400))
        # Weekends get about a third of a weekday's mail.
        if moment.weekday() < 5 or rng.random() < 0.35:
            return moment


def _one_message(rng: random.Random, n: int, boxes: list[int], start: datetime, days: int,
                 ids: _Ids, rows: dict[str, list[dict[str, Any]]],
                 counts: Generated) -> Iterator[dict[str, Any]]:
    pk = ids.next("messages")
    mailbox = rng.choice(boxes)
    received = _when(rng, start, days)
    t = received + timedelta(seconds=rng.uniform(2, 120))  # the poll's delay
    size = int(rng.lognormvariate(8.3, 0.7))
    text_chars = max(40, int(size * rng.uniform(0.15, 0.5)))
    kind = rng.random()
    status = "drafted"
    message = {"id": pk, "mailbox_id": mailbox, "uidvalidity": 1, "uid": n + 1,
               "message_id": None, "sha256": hashlib.sha256(str(pk).encode()).hexdigest(),
               "sent_at": received, "body_hash": None, "size": size, "subject": None,
               "sender": None, "received_at": received, "fetched_at": t, "status": status,
               "status_reason": None, "updated_at": t, "server_action_done": True,
               "claimed_by": None, "claim_expires_at": None, "attempts": 0, "retry_at": None,
               "last_error": None, "erased_at": None}
    rows["messages"].append(message)
    counts.messages += 1

    def event(stage: str, outcome: str, details: dict[str, Any], **extra: Any) -> dict[str, Any]:
        nonlocal t
        latency = float(extra.pop("latency_ms", 5.0))
        t += timedelta(milliseconds=latency)
        return {"id": ids.next("events"), "message_pk": pk, "mailbox_id": mailbox,
                "stage": stage, "outcome": outcome, "details": details,
                "model": extra.get("model"), "model_version": extra.get("model_version"),
                "latency_ms": round(latency, 3), "tokens_in": extra.get("tokens_in"),
                "tokens_out": extra.get("tokens_out"), "cost": extra.get("cost"),
                "actor": "worker", "created_at": t}

    yield event("fetch", "ok", {"uid": n + 1, "uidvalidity": 1})
    parse = {"body_source": "plain", "attachments": 0, "defects": [], "hidden_chars": 0,
             "text_chars": text_chars}
    if kind < 0.08:
        message["status"] = "skipped"
        yield event("parse", "skipped", {**parse, "auto_reply": "auto-submitted: auto-replied"},
                    latency_ms=3)
        yield event("settle", "skipped", {"status": "skipped"})
        return
    if kind < 0.09:
        message["status"] = "failed"
        yield event("parse", "error", {"error": "broken MIME structure"}, latency_ms=2)
        yield event("settle", "failed", {"status": "failed"})
        return
    yield event("parse", "ok", parse, latency_ms=rng.uniform(2, 20))
    intent = _pick(rng, INTENTS)
    language = _pick(rng, LANGUAGES)
    route_roll = rng.random()
    route = "slm" if route_roll < 0.78 else "llm" if route_roll < 0.90 else "human"
    confidence = rng.uniform(0.3, 0.6) if route != "slm" and rng.random() < 0.4 else \
        rng.uniform(0.7, 0.9999)
    yield event("classify", "ok", _classify_details(rng, intent, language, confidence,
                                                    rng.random() * 0.9),
                model="all-MiniLM-L6-v2", model_version="6c947f22b415",
                cost=rng.uniform(1e-7, 3e-6), latency_ms=rng.uniform(5, 40))
    yield event("extract", "ok", {"fields": {"order_id": [
        {"type": "pattern", "span": [19, 25], "confidence": 0.97}]}, "missing": [],
        "rejected": []}, latency_ms=rng.uniform(2, 10))
    yield event("retrieve", "ok", {"passages": _passages(rng)}, latency_ms=rng.uniform(2, 9))
    reasons: list[dict[str, Any]] = []
    if route == "llm":
        code = _pick(rng, LLM_REASONS)
        reasons.append({"code": code, "text": code.replace("_", " "), "action": "llm",
                        "details": {}})
    elif route == "human":
        code = _pick(rng, HUMAN_REASONS)
        reasons.append({"code": code, "text": code.replace("_", " "), "action": "human",
                        "details": {}})
        if rng.random() < 0.3:
            reasons.insert(0, {"code": "low_confidence", "text": "low confidence",
                               "action": "llm", "details": {}})
    yield event("route", route, {"route": route, "codes": [r["code"] for r in reasons],
                                 "reasons": reasons}, latency_ms=1.5)
    handoff = None
    drafted_by = "template"
    if route == "human":
        message["status"] = "needs_human"
        yield event("settle", "needs_human", {"status": "needs_human"})
    else:
        if route == "llm":
            failed = rng.random() < 0.05
            for task in ("classify", "reply"):
                rid = ids.next("llm_requests")
                tokens_in = rng.randint(600, 2500) if task == "reply" else rng.randint(300, 900)
                tokens_out = rng.randint(150, 500) if task == "reply" else rng.randint(30, 80)
                cost = (tokens_in * 2.5 + tokens_out * 10.0) / 1e6
                bad = failed and task == "reply"
                rows["llm_requests"].append({
                    "id": rid, "message_pk": pk, "task": task,
                    "state": "failed" if bad else "answered", "request": {"task": task},
                    "answer": None if bad else {"ok": True}, "error": "timeout" if bad else None,
                    "model": "gpt-4o-mini", "reserved_cost": 0.0, "cost": None if bad else cost,
                    "tokens_in": None if bad else tokens_in,
                    "tokens_out": None if bad else tokens_out, "claimed_by": None,
                    "created_at": t, "sent_at": t, "answered_at": None if bad else t})
                counts.llm_requests += 1
                latency = rng.uniform(400, 4000)
                if bad:
                    yield event("llm", "unavailable", {"task": task, "error": "timeout",
                                                        "llm_request": rid}, model="gpt-4o-mini",
                                latency_ms=latency)
                else:
                    yield event("llm", "ok", {"task": task, "llm_request": rid,
                                              "request_sha256": "0" * 64},
                                model="gpt-4o-mini", model_version="gpt-4o-mini-2024-07-18",
                                tokens_in=tokens_in, tokens_out=tokens_out, cost=cost,
                                latency_ms=latency)
            if failed:
                handoff = "llm_failed" if rng.random() < 0.7 else "budget_exhausted"
            drafted_by = "gpt-4o-mini"
        if handoff is None and rng.random() < 0.03:
            handoff = "unsafe_draft"
        if handoff is not None:
            message["status"] = "needs_human"
            yield event("settle", "needs_human", {"status": "needs_human", "handoff": handoff,
                                                  "handoff_details": {},
                                                  "codes": [*[r["code"] for r in reasons],
                                                            handoff]})
            return
        template = f"replies/{intent}.{language}.txt.j2"
        yield event("draft", "ok", {"template": template, "language": language},
                    model=drafted_by, model_version="a5a4b8402ce6",
                    latency_ms=rng.uniform(1, 10))
        draft_id = ids.next("drafts")
        drafted_at = t
        rows["drafts"].append({
            "id": draft_id, "message_pk": pk, "token": f"{pk:032x}",
            "reply_message_id": f"<{pk}@example.com>", "template": template,
            "language": language, "subject": "Re: ...", "body": "...", "mime": b"",
            "fields": {}, "passages": [], "gates": {}, "model": drafted_by,
            "model_version": "a5a4b8402ce6", "needs_review": False, "review_reasons": [],
            "delivered_at": t, "drafts_folder": "Drafts", "drafts_uid": pk,
            "created_at": drafted_at})
        counts.drafts += 1
        yield event("settle", "drafted", {"status": "drafted"})
        yield event("deliver", "ok", {"folder": "Drafts", "uid": pk})
        yield event("server_action", "ok", {"action": "flag"})
        if rng.random() < 0.75:
            _outcome(rng, pk, draft_id, drafted_at, template, drafted_by, language, intent,
                     ids, rows, counts)


def _outcome(rng: random.Random, pk: int, draft_id: int, drafted_at: datetime, template: str,
             model: str, language: str, intent: str, ids: _Ids,
             rows: dict[str, list[dict[str, Any]]], counts: Generated) -> None:
    roll = rng.random()
    outcome = ("sent_unchanged" if roll < 0.55 else "sent_edited" if roll < 0.85 else
               "rejected" if roll < 0.95 else "discarded")
    # Agents answer within working hours: minutes to a day.
    decided = drafted_at + timedelta(seconds=rng.lognormvariate(7.5, 1.3))
    distance = round(rng.betavariate(1.5, 6), 4) if outcome == "sent_edited" else (
        0.0 if outcome == "sent_unchanged" else None)
    rows["draft_outcomes"].append({
        "id": ids.next("draft_outcomes"), "message_pk": pk, "draft_id": draft_id,
        "outcome": outcome, "reason": _pick(rng, REJECT) if outcome == "rejected" else None,
        "note": None, "edit_distance": distance, "proposed_text": None, "sent_text": None,
        "sent_message_id": None, "source": "desk" if rng.random() < 0.8 else "mail_client",
        "agent": rng.choice(AGENTS), "template": template, "model": model,
        "model_version": "a5a4b8402ce6", "language": language, "created_at": decided})
    counts.outcomes += 1
    if outcome == "rejected" or (outcome == "sent_edited" and rng.random() < 0.15):
        corrected = rng.choice([i for i in INTENTS if i != intent])
        rows["human_labels"].append({
            "id": ids.next("human_labels"), "message_pk": pk, "kind": "intent", "name": None,
            "value": corrected, "previous": intent, "source": "desk",
            "agent": rng.choice(AGENTS), "created_at": decided, "used_in_training_version": None})
        counts.labels += 1
