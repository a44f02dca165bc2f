"""Teacher labels and audit events from real calls to the fake cloud LLM (SQLite, PostgreSQL)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

import pytest
from sqlalchemy import select

from mailbot.audit.cost import TokenPrices
from mailbot.classify.data import read_labeled_csv
from mailbot.config import LLMSettings
from mailbot.db.llm_records import TeacherLabel
from mailbot.db.models import Event
from mailbot.ingest.ledger import NewMessage, add_messages, get_or_create_mailbox, sha256_hex
from mailbot.llm import LLMClient, LLMResponseInvalid, LLMUnavailable
from mailbot.llm.audit import record_llm_call, record_llm_failure
from mailbot.llm.teacher import (
    export_teacher_labels,
    mark_teacher_labels_used,
    record_teacher_labels,
    teacher_text,
)
from tests.support.mail import support_email

LABELS = ["order_status", "refund", "billing"]


def add_message(session: Any, n: int) -> int:
    mailbox = get_or_create_mailbox(session, "acct", "INBOX")
    raw = support_email(n)
    (row,) = add_messages(session, mailbox, [NewMessage(
        uidvalidity=1, uid=n, raw=raw, size=len(raw), sha256=sha256_hex(raw),
        message_id=f"<{n}@x>", subject=f"s{n}", sender="c@example.org", received_at=None)])
    return row.id


def client(fake: Any) -> LLMClient:
    return LLMClient(LLMSettings(base_url=fake.base_url, model="fake-model", attempts=1),
                     prices=TokenPrices(2.5, 10.0))


def answer(intent: str, confidence: float = 0.9) -> dict[str, Any]:
    return {"intent": intent, "priority": "normal", "sentiment": "neutral", "language": "en",
            "confidence": confidence}


def test_teacher_labels_recorded_and_exported_for_training(database, fake_llm, tmp_path) -> None:
    llm = client(fake_llm)
    emails = [("Where is my parcel", "Order A1 has not arrived, tracking is stuck.",
               "order_status", 0.95),
              ("Money back", 'I want a refund, "now", please.\nThanks', "refund", 0.9),
              ("Invoice", "You charged me twice, check my invoice.", "billing", 0.4)]
    with database.session() as session:
        for n, (subject, body, intent, confidence) in enumerate(emails, start=1):
            pk = add_message(session, n)
            fake_llm.script(json=answer(intent, confidence), model="fake-model-v2")
            result = llm.classify(subject, body, LABELS)
            fake_llm.script(content=f"Reply {n}")
            reply = llm.draft_reply(subject, body, intent=intent)
            record_teacher_labels(session, pk, teacher_text(subject, body),
                                  classification=result, reply=reply)
            record_llm_call(session, result.call, message_pk=pk)

    with database.session() as session:
        rows = session.scalars(select(TeacherLabel).order_by(TeacherLabel.id)).all()
        kinds = sorted({r.kind for r in rows})
        assert kinds == ["intent", "language", "priority", "reply", "sentiment"]
        intent_rows = [r for r in rows if r.kind == "intent"]
        assert [r.label for r in intent_rows] == ["order_status", "refund", "billing"]
        assert intent_rows[0].model == "fake-model-v2"
        assert intent_rows[0].input_text == (
            "Where is my parcel\n\nOrder A1 has not arrived, tracking is stuck.")
        assert all(r.used_in_training_version is None for r in rows)
        assert [r.value for r in rows if r.kind == "reply"][1] == {"text": "Reply 2"}

        out = tmp_path / "teacher.csv"
        assert export_teacher_labels(session, out, "intent") == 3
        assert export_teacher_labels(session, tmp_path / "sure.csv", "intent",
                                     min_confidence=0.8) == 2

    # The classifier's own reader takes the file as `mailbot train intent --data` would.
    examples = read_labeled_csv(out)
    assert examples.labels == ("order_status", "refund", "billing")
    assert examples.texts[1] == 'Money back\n\nI want a refund, "now", please.\nThanks'

    with database.session() as session:
        ids = [r.id for r in session.scalars(select(TeacherLabel).where(
            TeacherLabel.kind == "intent", TeacherLabel.label != "billing"))]
        assert mark_teacher_labels_used(session, ids, "intent-v7") == 2
        buffer = io.StringIO()
        assert export_teacher_labels(session, buffer, "intent", unused_only=True) == 1
        assert list(csv.reader(io.StringIO(buffer.getvalue()))) == [
            ["text", "label"], ["Invoice\n\nYou charged me twice, check my invoice.", "billing"]]


def test_processing_again_replaces_the_label(database, fake_llm) -> None:
    llm = client(fake_llm)
    with database.session() as session:
        pk = add_message(session, 1)
        fake_llm.script(json=answer("refund"))
        record_teacher_labels(session, pk, "t", classification=llm.classify("s", "b", LABELS))
        mark_teacher_labels_used(session, [r.id for r in session.scalars(select(TeacherLabel))],
                                 "v1")
        fake_llm.script(json=answer("billing"))
        record_teacher_labels(session, pk, "t", classification=llm.classify("s", "b", LABELS))
    with database.session() as session:
        intent = session.scalars(select(TeacherLabel).where(TeacherLabel.kind == "intent")).all()
        assert [(r.label, r.used_in_training_version) for r in intent] == [("billing", None)]
        priority = session.scalars(select(TeacherLabel).where(TeacherLabel.kind == "priority"))
        assert [r.used_in_training_version for r in priority] == ["v1"]  # unchanged answer


def test_llm_calls_and_failures_in_the_audit_log(database, fake_llm) -> None:
    llm = client(fake_llm)
    with database.session() as session:
        pk = add_message(session, 1)
        fake_llm.script(json=answer("refund"), usage=(1200, 80))
        result = llm.classify("Refund", "my money back", LABELS)
        record_llm_call(session, result.call, message_pk=pk)
        fake_llm.script(content="{bad", usage=(100, 5)).script(content="{bad", usage=(110, 5))
        with pytest.raises(LLMResponseInvalid) as invalid:
            llm.classify("Refund", "my money back", LABELS)
        record_llm_failure(session, "classify", invalid.value, model=llm.settings.model,
                           message_pk=pk)
        fake_llm.script(status=503)
        with pytest.raises(LLMUnavailable) as down:
            llm.draft_reply("Refund", "my money back")
        record_llm_failure(session, "reply", down.value, model=llm.settings.model,
                           message_pk=pk)
    with database.session() as session:
        events = session.scalars(select(Event).where(Event.stage == "llm").order_by(Event.id)).all()
        ok, bad, unavailable = events
        assert (ok.outcome, ok.tokens_in, ok.tokens_out) == ("ok", 1200, 80)
        assert ok.cost == pytest.approx(1200 * 2.5e-6 + 80 * 1e-5)
        assert ok.model == "fake-model" and ok.latency_ms > 0
        # The event keeps a hash of what was sent, not the customer's words.
        sent = json.dumps(result.call.request, sort_keys=True, ensure_ascii=False)
        assert ok.details["request_sha256"] == hashlib.sha256(sent.encode()).hexdigest()
        assert ok.details["messages"] == len(fake_llm.chat_requests[0].messages)
        assert ok.details["task"] == "classify"
        assert (bad.outcome, bad.tokens_in, bad.details["repaired"]) == ("invalid", 210, True)
        assert bad.cost == pytest.approx(210 * 2.5e-6 + 10 * 1e-5)
        assert unavailable.outcome == "unavailable" and unavailable.cost is None
        assert unavailable.details["reason"] == "server_error"
        assert "HTTP 503" in unavailable.details["error"]
