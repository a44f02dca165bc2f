"""Escalation through the real pipeline and ledger (SQLite), with the fake cloud LLM:
pseudonymisation, what is recorded, and every reason a message goes to a person instead."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailbot.audit.events import record_event
from mailbot.db.drafts import DraftRecord
from mailbot.db.llm_records import LLMRequest, TeacherLabel
from mailbot.db.models import Event, Message
from mailbot.db.session import Database
from mailbot.errors import DatabaseUnavailable
from mailbot.ingest.maildir import ingest_local
from mailbot.llm.client import LLMClient
from mailbot.llm.escalate import EscalationRunner, reserve_for
from mailbot.pipeline.wiring import build_pipeline
from tests.support.fake_openai import ReceivedRequest, Reply, default_answer
from tests.support.mail import support_email
from tests.test_route import config_for

SENDER = "Emma Clarke <emma.clarke@example.com>"
PERSONAL = ("Emma", "Clarke", "emma.clarke@example.com", "A10234", "7946 0321",
            "DE89 3704 0044 0532 0130 00")
BODY = ("Hi, this is Emma Clarke. My order A10234 has not arrived. Please call me on "
        "+44 20 7946 0321 or write to emma.clarke@example.com. If it is lost, refund it to "
        "IBAN DE89 3704 0044 0532 0130 00.\n\nThanks,\nEmma")
HARD = ("Order A10234 is three weeks late. My lawyer will take you to court if it is not "
        "delivered by Friday.")


def process(config: Any, raws: list[bytes], tmp_path: Path, mailbox: str = "files"
            ) -> Database:
    """Ingest the emails into the ledger and run the real pipeline over them."""
    folder = tmp_path / f"in-{mailbox}-{len(list(tmp_path.glob('in-*')))}"
    folder.mkdir()
    for n, raw in enumerate(raws):
        (folder / f"{n:03d}.eml").write_bytes(raw)
    database = Database(config.database_url)
    database.upgrade()
    built = build_pipeline(config, database)
    ingest_local(database, sorted(folder.iterdir()), built.pipeline,
                 escalations=built.escalations, mailbox_name=mailbox)
    return database


def events(database: Database, stage: str) -> list[Event]:
    with database.session() as session:
        return list(session.scalars(select(Event).where(Event.stage == stage)
                                    .order_by(Event.id)))


def messages(database: Database) -> list[Message]:
    with database.session() as session:
        return list(session.scalars(select(Message).order_by(Message.id)))


def llm_config(tmp_path: Path, encoder_dir: Path, fake_llm: Any, *, llm_concurrency: int = 4,
               **route: Any) -> Any:
    return config_for(tmp_path, encoder_dir, route=route, llm={
        "base_url": fake_llm.base_url, "model": "fake-model", "attempts": 2,
        "retry_base_seconds": 0.01, "retry_max_seconds": 0.02, "breaker_failures": 3,
        "concurrency": llm_concurrency})


def answer_with_placeholders(request: ReceivedRequest) -> Reply:
    """The fake model answers in the placeholders it was given, as a real one does."""
    if request.schema is not None:
        return default_answer(request)
    found = dict.fromkeys(re.findall(r"<([A-Z]+)_\d+>", request.text()))
    token = {kind: re.search(rf"<{kind}_\d+>", request.text()).group()  # type: ignore[union-attr]
             for kind in found}
    return Reply(content=(
        f"Hello {token['PERSON']},\n\nthank you. Order {token['ORDER']} is on its way; we will "
        f"call you on {token['PHONE']} and confirm by e-mail to {token['EMAIL']}.\n\n"
        "Kind regards,\nSupport"))


def test_personal_data_never_reaches_the_cloud_and_comes_back_in_the_draft(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any
) -> None:
    fake_llm.default = answer_with_placeholders
    config = llm_config(tmp_path, encoder_dir, fake_llm,
                        vip_senders=["emma.clarke@example.com"], llm_classify="always")
    database = process(config, [support_email(1, body=BODY, sender=SENDER,
                                              subject="Order A10234 missing")], tmp_path)
    assert len(fake_llm.chat_requests) == 2  # classification and reply
    for request in fake_llm.chat_requests:
        for value in PERSONAL:
            assert value not in request.text(), value
    assert "<PERSON_1>" in fake_llm.chat_requests[1].text()

    with database.session() as session:
        [draft] = session.scalars(select(DraftRecord)).all()
        labels = {t.kind: t for t in session.scalars(select(TeacherLabel))}
    assert draft.model == "fake-model"
    assert "Order A10234 is on its way" in draft.body
    assert "+44 20 7946 0321" in draft.body and "emma.clarke@example.com" in draft.body
    assert draft.body.startswith("Hello Emma,")  # our layout's greeting, not the model's
    assert draft.body.count("Kind regards") == 1

    calls = events(database, "llm")
    assert [e.details["task"] for e in calls] == ["classify", "reply"]
    with database.session() as session:
        sent = list(session.scalars(select(LLMRequest).order_by(LLMRequest.id)))
    for call, row, request in zip(calls, sent, fake_llm.chat_requests, strict=True):
        assert row.answer["sent"]["messages"] == request.messages  # exactly what was sent
        assert call.details["llm_request"] == row.id and row.state == "answered"
        assert call.tokens_in and call.tokens_out and call.cost and call.cost > 0
        assert call.message_pk == messages(database)[0].id
        assert call.mailbox_id == messages(database)[0].mailbox_id
        assert call.details["placeholders"]["PERSON"] >= 1
        # The audit log keeps no personal data: the request's text is in llm_requests.
        assert "request" not in call.details and "response" not in call.details
    assert set(labels) == {"intent", "priority", "sentiment", "language", "reply"}
    assert "<ORDER_1>" in labels["reply"].value["text"]  # teachers keep the redacted text
    assert all(value not in labels["intent"].input_text for value in PERSONAL)
    [route] = events(database, "route")
    assert route.outcome == "llm" and "vip_sender" in route.details["codes"]
    assert [e.outcome for e in events(database, "settle")] == ["escalating", "drafted"]


@pytest.mark.parametrize("task", ["classification", "reply"])
def test_an_answer_whose_commit_reply_was_lost_is_recorded_once(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any, monkeypatch: pytest.MonkeyPatch,
    task: str
) -> None:
    """The database committed the answer, then the connection died before it said so: the
    retry finds the answer recorded and adds no second reply request, call or draft."""
    name = f"_record_{task}"
    original = getattr(EscalationRunner, name)
    lost: list[int] = []

    def commit_then_lose_the_reply(self: EscalationRunner, job: Any, result: Any) -> None:
        original(self, job, result)
        if not lost:
            lost.append(job.request_id)
            raise DatabaseUnavailable("server closed the connection unexpectedly")

    monkeypatch.setattr(EscalationRunner, name, commit_then_lose_the_reply)
    fake_llm.default = answer_with_placeholders
    config = llm_config(tmp_path, encoder_dir, fake_llm,
                        vip_senders=["emma.clarke@example.com"], llm_classify="always")
    database = process(config, [support_email(1, body=BODY, sender=SENDER)], tmp_path)
    assert lost  # the fault happened
    assert len(fake_llm.chat_requests) == 2  # the cloud was asked once per task
    with database.session() as session:
        requests = list(session.scalars(select(LLMRequest).order_by(LLMRequest.id)))
        drafts = session.scalars(select(DraftRecord)).all()
        labels = session.scalars(select(TeacherLabel)).all()
    assert [(r.task, r.state) for r in requests] == [("classify", "answered"),
                                                      ("reply", "answered")]
    assert [e.details["task"] for e in events(database, "llm")] == ["classify", "reply"]
    assert len(drafts) == 1
    assert sorted(t.kind for t in labels) == ["intent", "language", "priority", "reply",
                                              "sentiment"]
    assert [m.status for m in messages(database)] == ["drafted"]


def test_card_numbers_stay_masked_in_the_reply(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any
) -> None:
    body = "My lawyer says: you charged card 4242 4242 4242 4242 twice for order A10234."
    fake_llm.default = lambda r: default_answer(r) if r.schema else Reply(
        content="We see the charges on card " + re.search(r"<CARD_\d+>", r.text()).group()
        + " and will look into them.")  # type: ignore[union-attr]
    config = llm_config(tmp_path, encoder_dir, fake_llm)
    database = process(config, [support_email(1, body=body, sender=SENDER)], tmp_path)
    assert all("4242 4242" not in r.text() for r in fake_llm.chat_requests)
    with database.session() as session:
        [draft] = session.scalars(select(DraftRecord)).all()
    assert "**** 4242" in draft.body and "4242 4242 4242 4242" not in draft.body


def test_a_failing_llm_sends_the_mail_to_a_person_and_the_breaker_stops_calling(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any
) -> None:
    fake_llm.default = lambda r: Reply(status=500)
    # One call at a time, so the order of failures is the order of the messages.
    config = llm_config(tmp_path, encoder_dir, fake_llm, llm_concurrency=1)
    raws = [support_email(n, body=HARD, sender=f"C{n} <c{n}@example.org>",
                          subject=f"Late order {n}") for n in range(3)]
    database = process(config, raws, tmp_path)
    # 2 attempts for the first message, 1 more opens the breaker (3 failures), then none.
    assert len(fake_llm.chat_requests) == 3
    rows = messages(database)
    assert [m.status for m in rows] == ["needs_human"] * 3
    assert all(m.status_reason.startswith("needs a person: legal threat") for m in rows)
    handed = [e for e in events(database, "settle") if e.outcome == "needs_human"]
    assert [e.details["handoff"] for e in handed] == ["llm_failed"] * 3
    causes = [e.details["handoff_details"]["cause"] for e in handed]
    assert causes == ["server_error", "breaker_open", "breaker_open"]
    assert [e.outcome for e in events(database, "llm")] == ["unavailable"] * 3
    assert events(database, "draft") == []


def test_an_unusable_answer_goes_to_a_person_but_its_cost_is_kept(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any
) -> None:
    fake_llm.default = lambda r: Reply(content="   ")
    config = llm_config(tmp_path, encoder_dir, fake_llm)
    database = process(config, [support_email(1, body=HARD, sender=SENDER)], tmp_path)
    [call] = events(database, "llm")
    assert call.outcome == "invalid" and call.cost is not None
    [message] = messages(database)
    assert message.status == "needs_human" and "cloud LLM failed (reply)" in message.status_reason


def spend(database: Database, cost: float, when: datetime) -> None:
    with database.session() as session:
        event = record_event(session, "llm", "ok", cost=cost, tokens_in=1, tokens_out=1)
        event.created_at = when


@pytest.mark.parametrize("period", ["daily", "monthly"])
def test_a_spent_budget_sends_escalations_to_a_person(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any, period: str
) -> None:
    config = config_for(tmp_path, encoder_dir, llm={"base_url": fake_llm.base_url,
                                                     "model": "fake-model"},
                        cost={f"{period}_budget": 0.5})
    database = Database(config.database_url)
    database.upgrade()
    now = datetime.now(UTC)
    spend(database, 0.5, now if period == "daily" else now.replace(day=1, hour=0, minute=0))
    process(config, [support_email(1, body=HARD, sender=SENDER),
                     support_email(2, sender="Tom <tom@example.org>")], tmp_path)
    assert fake_llm.requests == []
    hard, easy = messages(database)
    assert hard.status == "needs_human"
    assert f"{period} cloud LLM budget reached" in hard.status_reason
    assert easy.status == "drafted"  # the small model's work needs no budget
    [exhausted] = events(database, "budget")
    assert exhausted.outcome == "exhausted" and exhausted.message_pk == hard.id


def test_the_budget_counts_calls_in_flight(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any
) -> None:
    """Two escalations at once with room for one call in flight: the second waits until the
    first is answered (it might still have cost its whole reservation), then goes out."""
    def slow(request: ReceivedRequest) -> Reply:
        answer = default_answer(request)
        answer.delay = 0.3
        return answer

    fake_llm.default = slow
    settings = {"base_url": fake_llm.base_url, "model": "fake-model", "max_output_tokens": 64}
    probe = config_for(tmp_path, encoder_dir, llm=settings)
    one_call = reserve_for(LLMClient.from_config(probe), "reply",
                           {"subject": "Late order 0", "body": HARD, "intent": "complaint",
                            "language": "en", "facts": {"order_id": "<ORDER_1>"}},
                           probe.drafts.company)
    config = config_for(tmp_path, encoder_dir, llm=settings,
                        cost={"daily_budget": round(one_call * 1.5, 6)})
    raws = [support_email(n, body=HARD, sender=f"C{n} <c{n}@example.org>",
                          subject=f"Late order {n}") for n in range(2)]
    database = process(config, raws, tmp_path)
    assert [m.status for m in messages(database)] == ["drafted", "drafted"]
    first, second = fake_llm.chat_requests
    assert second.received_at - first.received_at >= 0.3  # one after the other, not at once
    spent = sum(e.cost or 0 for e in events(database, "llm"))
    assert 0 < spent <= config.cost.daily_budget


def test_no_cloud_mailboxes_keep_their_mail_on_the_server(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any
) -> None:
    config = llm_config(tmp_path, encoder_dir, fake_llm, no_cloud=["local/private"])
    database = process(config, [support_email(1, body=HARD, sender=SENDER)], tmp_path,
                       mailbox="private")
    process(config, [support_email(2, body=HARD, sender="Tom <tom@example.org>")], tmp_path,
            mailbox="shared")
    assert len(fake_llm.chat_requests) == 1  # only the shared mailbox's message
    private, shared = messages(database)
    assert private.status == "needs_human"
    assert "route.no_cloud: local/private" in private.status_reason
    assert shared.status == "drafted"
    [route_private, route_shared] = events(database, "route")
    assert route_private.details["codes"] == ["legal_threat", "no_cloud"]
    assert route_shared.outcome == "llm"


def test_the_third_message_in_a_thread_escalates(
    tmp_path: Path, encoder_dir: Path, fake_llm: Any
) -> None:
    config = llm_config(tmp_path, encoder_dir, fake_llm)
    body = "Where is my order A10234? It has still not arrived."
    first = support_email(1, body=body, sender=SENDER, subject="Where is my order A10234?")
    first_id = re.search(rb"Message-ID: <([^>]+)>", first).group(1).decode()  # type: ignore[union-attr]
    second = support_email(2, body=body, sender=SENDER, subject="Re: Where is my order A10234?",
                           headers={"In-Reply-To": f"<{first_id}>",
                                    "References": f"<{first_id}>"})
    # The first two in one batch, the third later: history from the batch and the ledger.
    database = process(config, [first, second], tmp_path)
    third = support_email(3, body=body, sender=SENDER, subject="RE: Where is my order A10234?")
    other = support_email(4, body=body, sender="Tom <tom@example.org>",
                          subject="Re: Where is my order A10234?")
    process(config, [third, other], tmp_path)
    routes = events(database, "route")
    assert [e.outcome for e in routes] == ["slm", "slm", "llm", "slm"]
    assert routes[2].details["codes"] == ["repeated_contact"]
    assert routes[2].details["reasons"][0]["details"]["messages_in_thread"] == 3


@pytest.mark.parametrize(("written", "kept"), [
    ("Hello Emma,\n\nYour order is on its way.\n\nKind regards,\nThe Team",
     "Your order is on its way."),
    ("Hallo Jonas,\nIhre Bestellung ist unterwegs.\n\nMit freundlichen Grüßen\nSupport",
     "Ihre Bestellung ist unterwegs."),
    ("Hi, we found your parcel and it ships today.\nThanks for your patience while we "
     "looked into it.", "Hi, we found your parcel and it ships today.\nThanks for your "
     "patience while we looked into it."),
])
def test_the_models_own_greeting_and_sign_off_give_way_to_our_layout(
    written: str, kept: str
) -> None:
    from mailbot.compose.trim import trim_reply

    assert trim_reply(written) == kept
