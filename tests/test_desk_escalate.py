"""Escalating from the desk: an agent asks the cloud LLM for a new draft, the worker's cloud
step makes the call, and the new draft replaces the old one on the page and in the Drafts
folder. A failing cloud LLM leaves the old draft and tells the agent why; a spent budget
changes nothing. Real `mailbot web` and worker, Dovecot, chromium; the cloud LLM is the
OpenAI-compatible test server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailbot.audit.events import record_event
from mailbot.compose.mime import TOKEN_HEADER
from mailbot.db.drafts import DraftRecord
from mailbot.db.llm_records import LLMRequest
from mailbot.db.models import Event, Message
from mailbot.db.session import Database
from mailbot.resources import data_dir
from tests.support.database import PG_ADMIN_URL, _pg_admin_connect, _pg_or_skip
from tests.support.desk import (
    AGENT,
    AGENT_PASSWORD,
    CHROMIUM,
    DeskProcess,
    Relay,
    browser_or_skip,
    free_port,
    mailbot,
    write_desk_config,
)
from tests.support.dovecot import DovecotServer, ImapUser
from tests.support.fake_openai import FakeOpenAI, Reply, default_answer

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(600)]

SAMPLES = data_dir() / "samples"
ORDER, ADDRESS, REFUND = "Where is my order", "Change shipping address", "Refund for returned"
NEW_TEXT = "Thank you for your message about order A10234; we checked it for you (ref CLOUD-7)."


@dataclass
class EscalationDesk:
    user: ImapUser
    llm: FakeOpenAI
    web: DeskProcess
    database: Database
    config: Path

    def pk(self, subject_part: str) -> int:
        with self.database.session() as s:
            return int(s.scalar(select(Message.id).where(Message.subject.contains(subject_part))))

    def draft(self, pk: int) -> DraftRecord:
        with self.database.session() as s:
            found = s.scalar(select(DraftRecord).where(DraftRecord.message_pk == pk))
            assert found is not None
            s.expunge(found)
            return found

    def in_drafts(self, token: str) -> int:
        with self.user.client() as client:
            client.select_folder("Drafts", readonly=True)
            return len(client.search(["HEADER", TOKEN_HEADER, token]))

    def work(self) -> None:
        """One pass of the worker (`mailbot run --once`)."""
        ran = mailbot(self.config, "run", "--once")
        assert ran.returncode == 0, ran.stderr


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def desk(request: pytest.FixtureRequest, dovecot: DovecotServer, encoder_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[EscalationDesk]:
    browser_or_skip()
    from mailbot.llm.breaker import reset_breakers

    directory = tmp_path_factory.mktemp(f"escalate-{request.param}")
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite:///{directory / 'mailbot.db'}"
    else:
        _pg_or_skip()
        pg_name = f"mailbot_esc_{uuid.uuid4().hex[:10]}"
        with _pg_admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{pg_name}"
    user = dovecot.add_user(f"escalate-{request.param}")
    user.append_many([(SAMPLES / name).read_bytes() for name in (
        "01_order_status.eml", "02_refund_request.eml", "05_address_change.eml")])
    reset_breakers()
    llm = FakeOpenAI().start()
    relay = Relay(free_port()).start()
    config = write_desk_config(directory, user.account_settings(
        support_address="support@northwind.example"), url, encoder_dir.parent, relay.port)
    with config.open("a") as handle:
        handle.write(f'[llm]\nbase_url = "{llm.base_url}"\nmodel = "fake-model"\n'
                     "attempts = 1\nread_timeout = 20\n[cost]\ndaily_budget = 5.0\n")
    ran = mailbot(config, "run", "--once")
    assert ran.returncode == 0, ran.stderr
    added = mailbot(config, "user", "add", AGENT, "--password-stdin", stdin=AGENT_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    web = DeskProcess(config, directory / "web.log").start()
    database = Database(url)
    try:
        yield EscalationDesk(user, llm, web, database, config)
    finally:
        web.stop()
        relay.stop()
        llm.stop()
        database.dispose()
        reset_breakers()
        if pg_name:
            with _pg_admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


@pytest.fixture()
def page(desk: EscalationDesk) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(desk.web.url + "/")
            page.fill("input[name=username]", AGENT)
            page.fill("input[name=password]", AGENT_PASSWORD)
            page.click("form.login button[type=submit]")
            page.wait_for_selector("table.queue")
            yield page
        finally:
            browser.close()


def escalate(desk: EscalationDesk, page: Any, pk: int) -> str:
    """Press Escalate on the message page; the flash the agent sees."""
    page.goto(f"{desk.web.url}/messages/{pk}")
    page.click("form.escalate button")
    page.wait_for_selector("p.flash")
    return str(page.locator("p.flash").inner_text())


def desk_events(desk: EscalationDesk, pk: int) -> list[tuple[str, str, str]]:
    with desk.database.session() as s:
        return [tuple(row) for row in s.execute(  # type: ignore[misc]
            select(Event.stage, Event.outcome, Event.actor).where(Event.message_pk == pk)
            .order_by(Event.id))]


def test_escalated_draft_replaces_the_old_one_on_the_page_and_in_drafts(
        desk: EscalationDesk, page: Any) -> None:
    pk = desk.pk(ORDER)
    old = desk.draft(pk)
    assert desk.in_drafts(old.token) == 1
    desk.llm.default = lambda r: Reply(content=NEW_TEXT) if r.schema is None else (
        default_answer(r))
    asked = len(desk.llm.chat_requests)
    said = escalate(desk, page, pk)
    assert said.startswith("Escalated")
    assert page.locator("strong.status").inner_text() == "escalating"
    assert ("desk", "escalated", AGENT) in desk_events(desk, pk)
    assert len(desk.llm.chat_requests) == asked  # the web request itself called no one

    desk.work()
    page.goto(f"{desk.web.url}/messages/{pk}")
    assert page.locator("strong.status").inner_text() == "drafted"
    body = page.locator("form.editor textarea").input_value()
    assert "ref CLOUD-7" in body and body != old.body
    new = desk.draft(pk)
    assert new.token != old.token and "ref CLOUD-7" in new.body
    assert desk.in_drafts(old.token) == 0 and desk.in_drafts(new.token) == 1
    sent = desk.llm.chat_requests[asked:]
    assert sent and "emma.clarke@example.com" not in "".join(r.text() for r in sent)
    with desk.database.session() as s:
        asked_by = s.scalars(select(LLMRequest.request).where(LLMRequest.message_pk == pk,
                                                                LLMRequest.state == "answered"))
        assert AGENT in [r.get("asked_by") for r in asked_by]


def test_a_failing_cloud_llm_keeps_the_old_draft_and_says_why(desk: EscalationDesk,
                                                              page: Any) -> None:
    pk = desk.pk(ADDRESS)
    old = desk.draft(pk)
    desk.llm.default = lambda r: Reply(status=500, error="the model is overloaded")
    try:
        assert escalate(desk, page, pk).startswith("Escalated")
        desk.work()
    finally:
        desk.llm.default = default_answer
    page.goto(f"{desk.web.url}/messages/{pk}")
    assert page.locator("strong.status").inner_text() == "needs_human"
    assert "the cloud LLM failed" in page.locator("span.reason").inner_text()
    assert page.locator("form.editor textarea").input_value() == old.body
    assert desk.draft(pk).token == old.token and desk.in_drafts(old.token) == 1
    # The agent may try again once the cloud LLM is back.
    assert page.locator("form.escalate button").count() == 1


def test_a_spent_budget_changes_nothing(desk: EscalationDesk, page: Any) -> None:
    pk = desk.pk(REFUND)
    before = desk.draft(pk)
    status = desk.database.session
    with status() as s:
        was = s.get(Message, pk).status  # type: ignore[union-attr]
        record_event(s, "llm", "ok", cost=6.0, tokens_in=1, tokens_out=1)
        requests_before = len(s.scalars(select(LLMRequest.id)).all())
    said = escalate(desk, page, pk)
    assert said.startswith("Not escalated: daily cloud LLM budget reached")
    assert page.locator("strong.status").inner_text() == was
    with status() as s:
        assert len(s.scalars(select(LLMRequest.id)).all()) == requests_before
    assert ("desk", "escalated", AGENT) not in desk_events(desk, pk)
    assert desk.draft(pk).token == before.token
