"""The review desk in a real browser: an agent logs in, filters the queue, opens a message,
corrects the intent, edits the draft and sends it; the relay gets exactly one reply, Sent has
it, Drafts no longer does, the audit log names the agent. A desk killed mid-send never sends
twice. Hostile mail never runs script. Runs on SQLite and PostgreSQL against a real
`mailbot web`, Dovecot, aiosmtpd and Debian's chromium."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import delete, select

from mailbot.compose.mime import TOKEN_HEADER
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Event, Message
from mailbot.db.outbox import OutboxEntry
from mailbot.db.outcomes import DraftOutcome, HumanLabel
from mailbot.db.session import Database
from mailbot.resources import data_dir
from tests.support.database import PG_ADMIN_URL, _pg_admin_connect, _pg_or_skip
from tests.support.desk import (
    ACCEPTED,
    ADMIN,
    ADMIN_PASSWORD,
    AGENT,
    AGENT_PASSWORD,
    CHROMIUM,
    DeskProcess,
    Relay,
    browser_or_skip,
    free_port,
    hostile_email,
    mailbot,
    write_desk_config,
)
from tests.support.dovecot import DovecotServer, ImapUser

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(600)]

SAMPLES = data_dir() / "samples"
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
ORDER = "Where is my order #A10234?"
# Mail for the reject and relay tests: (sample, a part of its subject).
REJECTED, ELSEWHERE = ("08_product_question.eml", "backpack"), ("12_html_only.eml", "Exchange")
TROUBLE = {"550 5.7.1 Message refused by policy": ("04_double_charge.eml", "Charged twice"),
           "451 4.3.0 Try again later": ("06_login_problem.eml", "log in"),
           "down": ("07_app_crash.eml", "App crashes")}
EXTRA = [REJECTED[0], ELSEWHERE[0], *(sample for sample, _ in TROUBLE.values())]


@dataclass
class Desk:
    kind: str
    user: ImapUser
    relay: Relay
    web: DeskProcess
    database: Database
    config: Path

    def pk(self, subject_part: str) -> int:
        with self.database.session() as s:
            return int(s.scalar(select(Message.id).where(Message.subject.contains(subject_part))))

    def message(self, pk: int) -> Message:
        with self.database.session() as s:
            found = s.get(Message, pk)
            assert found is not None
            return found


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def desk(request: pytest.FixtureRequest, dovecot: DovecotServer, encoder_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """Mail processed by the real pipeline, then the desk serving it."""
    browser_or_skip()
    directory = tmp_path_factory.mktemp(f"desk-{request.param}")
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite:///{directory / 'mailbot.db'}"
    else:
        _pg_or_skip()
        pg_name = f"mailbot_desk_{uuid.uuid4().hex[:10]}"
        with _pg_admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{pg_name}"
    user = dovecot.add_user("desk")
    user.append_many([(SAMPLES / name).read_bytes() for name in (
        "01_order_status.eml", "02_refund_request.eml", "03_cancellation.eml",
        "05_address_change.eml", *EXTRA)] + [hostile_email()])
    relay = Relay(free_port()).start()
    config = write_desk_config(directory, user.account_settings(
        support_address="support@northwind.example"), url, encoder_dir.parent, relay.port)
    ran = mailbot(config, "run", "--once")
    assert ran.returncode == 0, ran.stderr
    for name, role, password in ((AGENT, "agent", AGENT_PASSWORD),
                                 (ADMIN, "admin", ADMIN_PASSWORD)):
        added = mailbot(config, "user", "add", name, "--role", role, "--password-stdin",
                        stdin=password + "\n")
        assert added.returncode == 0, added.stderr
    web = DeskProcess(config, directory / "web.log").start()
    database = Database(url)
    try:
        yield Desk(request.param, user, relay, web, database, config)
    finally:
        web.stop()
        relay.stop()
        database.dispose()
        if pg_name:
            with _pg_admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


@pytest.fixture()
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        assert chromium.version.split(".")[0] == "156", chromium.version
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Watched:
    page: Any
    dialogs: list[str]
    errors: list[str]


def open_page(browser: Any) -> Watched:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return Watched(page, dialogs, errors)


def login(page: Any, desk: Desk, name: str = AGENT, password: str = AGENT_PASSWORD) -> None:
    page.goto(desk.web.url + "/")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("table.queue")


def imap_folder(user: ImapUser, folder: str, header: str, value: str) -> list[bytes]:
    with user.client() as client:
        client.select_folder(folder, readonly=True)
        uids = client.search(["HEADER", header, value])
        fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    return [f[b"BODY[]"] for f in fetched.values()]


def test_agent_filters_corrects_edits_and_sends_once(desk: Desk, browser: Any) -> None:
    w = open_page(browser)
    page = w.page
    login(page, desk)
    drafts_tab = page.locator("a.tab[data-tab=drafts] .count")
    assert int(drafts_tab.inner_text()) >= 3
    page.select_option("select[name=intent]", "order_status")
    page.wait_for_function("() => location.search.includes('intent=order_status')")
    page.wait_for_selector(f"table.queue a:text-is('{ORDER}')")
    subjects = page.locator("table.queue tbody td:nth-child(2)").all_inner_texts()
    intents = page.locator("table.queue tbody td:nth-child(5)").all_inner_texts()
    assert ORDER in subjects and not any("Refund" in s for s in subjects)
    assert set(intents) == {"order_status"}
    if desk.kind == "sqlite":
        page.select_option("select[name=intent]", "")
        page.wait_for_function("() => !location.search.includes('intent=order_status')")
        page.screenshot(path=str(DOCS_IMG / "queue.png"), full_page=True)
        page.select_option("select[name=intent]", "order_status")
        page.wait_for_selector(f"table.queue a:text-is('{ORDER}')")
    page.click(f"table.queue a:text-is('{ORDER}')")
    page.wait_for_selector("h1.subject")
    assert "A10234" in page.locator("pre.mailtext mark[data-field=order_id]").first.inner_text()
    assert page.locator("tr[data-kind=intent] strong").inner_text() == "order_status"
    if desk.kind == "sqlite":
        page.screenshot(path=str(DOCS_IMG / "message.png"), full_page=True)

    # The agent says the intent was wrong.
    page.select_option("tr[data-kind=intent] select", "shipping")
    page.click("tr[data-kind=intent] button")
    page.wait_for_selector("p.flash.ok")
    assert "order_status → shipping" in page.locator("ul.labels").inner_text()

    # Editing claims the message; the others see who holds it.
    editor = page.locator("form.editor textarea")
    proposed = editor.input_value()
    editor.click()
    page.wait_for_selector(f"#claim .holder:text-is('{AGENT}')")
    edited = proposed.replace("Kind regards", "I have asked the carrier too.\n\nKind regards")
    editor.fill(edited)
    page.click("form.editor button[type=submit]")
    page.wait_for_selector("p.flash.ok:text-is('Reply sent.')")
    assert page.locator("strong.status").inner_text() == "sent"
    assert w.dialogs == [] and w.errors == []

    # Exactly one reply at the relay, threaded, to the customer.
    original = message_from_bytes((SAMPLES / "01_order_status.eml").read_bytes(),
                                  policy=policy.default)
    replies = [m for m in desk.relay.messages if b"A10234" in m[2]]
    assert len(replies) == 1
    sender, recipients, raw = replies[0]
    reply = message_from_bytes(raw, policy=policy.default)
    assert recipients == ["emma.clarke@example.com"]
    assert reply["To"].addresses[0].addr_spec == "emma.clarke@example.com"
    assert reply["Subject"] == f"Re: {ORDER}"
    assert reply["In-Reply-To"] == original["Message-ID"]
    assert original["Message-ID"] in reply["References"]
    assert reply["Auto-Submitted"] is None
    assert "I have asked the carrier too." in reply.get_body(("plain",)).get_content()

    # Sent has it; the stale draft is gone from Drafts.
    assert len(imap_folder(desk.user, "Sent", "Message-ID", reply["Message-ID"])) == 1
    pk = desk.pk(ORDER)
    with desk.database.session() as s:
        draft = s.scalar(select(DraftRecord).where(DraftRecord.message_pk == pk))
        assert draft is not None
        token = draft.token
        events = s.execute(select(Event.stage, Event.outcome, Event.actor)
                           .where(Event.message_pk == pk)).all()
        labels = s.scalars(select(HumanLabel).where(HumanLabel.message_pk == pk)).all()
        [outcome] = s.scalars(select(DraftOutcome).where(DraftOutcome.message_pk == pk)).all()
    assert imap_folder(desk.user, "Drafts", TOKEN_HEADER, token) == []
    assert ("desk", "corrected", AGENT) in events
    assert ("send", "ok", AGENT) in events
    assert [(lab.kind, lab.value, lab.previous, lab.source, lab.agent) for lab in labels] == [
        ("intent", "shipping", "order_status", "desk", AGENT)]
    assert outcome.outcome == "sent_edited" and outcome.agent == AGENT
    assert 0 < (outcome.edit_distance or 0) < 0.5


def _send_through_crash(desk: Desk, browser: Any, subject: str, failpoint: str) -> int:
    """Send `subject`'s draft from a desk that dies at `failpoint`; then restart it."""
    desk.web.stop()
    desk.web.start(failpoints=failpoint)
    w = open_page(browser)
    login(w.page, desk)
    w.page.goto(f"{desk.web.url}/messages/{desk.pk(subject)}")
    w.page.click("form.editor button[type=submit]", no_wait_after=True)
    assert desk.web.process is not None
    desk.web.process.wait(timeout=60)  # killed at the failpoint
    desk.web.start()
    return desk.pk(subject)


def _wait_for(check: Any, seconds: float = 30) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_desk_killed_after_the_send_does_not_send_twice(desk: Desk, browser: Any) -> None:
    subject = "Refund"
    before = len(desk.relay.messages)
    pk = _send_through_crash(desk, browser, subject, "send.before_commit")
    # The restarted desk finds the reply in Sent and finishes it without sending again.
    _wait_for(lambda: desk.message(pk).status == "sent")
    w = open_page(browser)
    login(w.page, desk)
    w.page.goto(f"{desk.web.url}/messages/{pk}")
    assert w.page.locator("strong.status").inner_text() == "sent"
    assert w.page.locator("form.editor").count() == 0  # nothing left to send
    assert len(desk.relay.messages) == before + 1
    with desk.database.session() as s:
        entry = s.scalar(select(OutboxEntry).where(OutboxEntry.key == f"send:{pk}"))
        assert entry is not None and entry.state == "done"
        assert entry.result["confirmed_in_sent"] is True
        assert "mime_b64" not in entry.payload and "to" not in entry.payload
        # Sent unchanged: the classification and every field the draft used stand as labels.
        draft = s.scalar(select(DraftRecord).where(DraftRecord.message_pk == pk))
        labels = s.scalars(select(HumanLabel).where(HumanLabel.message_pk == pk)).all()
    assert draft is not None and draft.fields
    confirmed = {(lab.kind, lab.name or "", lab.value) for lab in labels
                 if lab.source == "confirmed"}
    assert len([value for kind, _, value in confirmed if kind == "intent"]) == 1
    expected = {("field", name, str(value)) for name, value in draft.fields.items()
                if value is not None and not isinstance(value, dict | list)}
    assert expected and expected <= confirmed


def test_desk_killed_during_smtp_leaves_it_uncertain_not_resent(desk: Desk,
                                                                 browser: Any) -> None:
    before = len(desk.relay.messages)
    pk = _send_through_crash(desk, browser, "cancel", "send.after_smtp")
    _wait_for(lambda: desk.message(pk).status == "send_uncertain")
    w = open_page(browser)
    login(w.page, desk)
    w.page.goto(f"{desk.web.url}/messages/{pk}")
    # It may have gone out: the desk offers no send, only a person's decision.
    assert w.page.locator("form.editor").count() == 0
    assert "uncertain" in w.page.locator("p.send-state").inner_text()
    assert len(desk.relay.messages) == before + 1
    # A person checked: it did go out.
    w.page.click("form[action$='/resolve'] button:text-is('It was sent')")
    w.page.wait_for_selector("strong.status:text-is('sent')")


def test_hostile_mail_never_runs_script(desk: Desk, browser: Any) -> None:
    w = open_page(browser)
    page = w.page
    login(page, desk)
    responses: list[Any] = []
    page.on("response", lambda r: responses.append(r) if r.request.resource_type == "document"
            else None)
    for tab in ("drafts", "human", "failures"):
        page.goto(f"{desk.web.url}/?tab={tab}")
    pk = desk.pk("A55555")
    page.goto(f"{desk.web.url}/messages/{pk}")
    text = page.locator("main").inner_text()
    assert "<script>alert(12)</script>" in page.locator("h1.subject").inner_text()
    assert "<img src=x onerror=alert(11)>" in text
    assert "<svg onload=alert(22)>.pdf" in page.locator("ul.attachments").inner_text()
    assert page.locator("main script, main svg, main img, main iframe").count() == 0
    # A field value an agent typed with markup in it.
    if page.locator("tr[data-field] input[name=value]").count():
        page.locator("tr[data-field] input[name=value]").first.fill("<script>alert(23)</script>")
        page.locator("tr[data-field] button").first.click()
        page.wait_for_selector("p.flash.ok")
        assert "<script>alert(23)</script>" in page.locator("ul.labels").inner_text()
    page.hover("h1.subject")
    page.hover("pre.mailtext")
    assert w.dialogs == []
    assert w.errors == []
    for response in responses:
        assert response.headers["content-security-policy"].startswith("default-src 'self'")


def test_message_page_lists_each_field_once_and_marks_exactly_the_date(desk: Desk,
                                                                     browser: Any) -> None:
    w = open_page(browser)
    login(w.page, desk)
    w.page.goto(f"{desk.web.url}/messages/{desk.pk(ORDER)}")
    rows = w.page.locator("section.fields tr[data-field]")
    shown = [(rows.nth(i).get_attribute("data-field"),
              rows.nth(i).locator("mark").inner_text()) for i in range(rows.count())]
    # A10234 is in the subject and in the body: one row, both places marked.
    assert len(shown) == len(set(shown)) and [n for n, _ in shown].count("order_id") == 1
    marks = w.page.locator("pre.mailtext mark[data-field=order_id]").all_inner_texts()
    assert marks == ["A10234", "A10234"]
    # "... before I travel on 12 March." marks the date, not the full stop after it.
    assert w.page.locator("pre.mailtext mark[data-field=date]").all_inner_texts() == [
        "24 February", "12 March"]


def draft_of(desk: Desk, pk: int) -> DraftRecord:
    with desk.database.session() as s:
        draft = s.scalar(select(DraftRecord).where(DraftRecord.message_pk == pk))
        assert draft is not None, f"message {pk} has no draft"
        s.expunge(draft)
        return draft


def delivered(desk: Desk, token: str) -> None:
    """Wait until the draft is in the Drafts folder (the worker's poll appended it)."""
    _wait_for(lambda: len(imap_folder(desk.user, "Drafts", TOKEN_HEADER, token)) == 1)


@pytest.mark.parametrize("button, subject, status", [
    ("form[action$='/reject'] button", REJECTED[1], "rejected"),
    ("form[action$='/elsewhere'] button", ELSEWHERE[1], "handled_elsewhere"),
])
def test_a_draft_not_sent_leaves_the_drafts_folder(desk: Desk, browser: Any, button: str,
                                                   subject: str, status: str) -> None:
    pk = desk.pk(subject)
    token = draft_of(desk, pk).token
    delivered(desk, token)
    w = open_page(browser)
    login(w.page, desk)
    w.page.goto(f"{desk.web.url}/messages/{pk}")
    if status == "rejected":
        w.page.select_option("form[action$='/reject'] select[name=reason]", "wrong_facts")
    w.page.click(button)
    w.page.wait_for_selector(f"strong.status:text-is('{status}')")
    assert w.page.locator("p.flash.error").count() == 0
    assert imap_folder(desk.user, "Drafts", TOKEN_HEADER, token) == []
    with desk.database.session() as s:
        entry = s.scalar(select(OutboxEntry).where(OutboxEntry.key == f"undraft:{token}"))
        assert entry is not None and entry.state == "done" and entry.result["removed"] == 1
        events = s.execute(select(Event.stage, Event.outcome, Event.actor)
                           .where(Event.message_pk == pk)).all()
    assert ("desk", "rejected" if status == "rejected" else "handled_elsewhere",
            AGENT) in events
    assert ("deliver", "withdrawn") in [(stage, outcome) for stage, outcome, _ in events]
    # The worker's next poll finds nothing left to do, and appends nothing back.
    ran = mailbot(desk.config, "run", "--once") if status == "handled_elsewhere" else None
    assert ran is None or ran.returncode == 0, ran and ran.stderr
    assert imap_folder(desk.user, "Drafts", TOKEN_HEADER, token) == []


@pytest.mark.parametrize("trouble", list(TROUBLE))
def test_a_relay_that_refuses_or_is_down_sends_nothing_and_a_retry_sends_once(
        desk: Desk, browser: Any, trouble: str) -> None:
    pk = desk.pk(TROUBLE[trouble][1])
    draft = draft_of(desk, pk)
    delivered(desk, draft.token)
    before = len(desk.relay.messages)
    marker = f"(checked by {trouble[:3]})"
    w = open_page(browser)
    login(w.page, desk)
    w.page.goto(f"{desk.web.url}/messages/{pk}")
    w.page.locator("form.editor textarea").fill(f"{draft.body}\n{marker}")
    if trouble == "down":
        desk.relay.stop()
    else:
        desk.relay.answer = trouble
    try:
        w.page.click("form.editor button[type=submit]")
        w.page.wait_for_selector("p.flash.error")
        said = w.page.locator("p.flash.error").inner_text()
    finally:
        desk.relay.answer = ACCEPTED
        if desk.relay.controller is None:
            desk.relay.start()
    assert said.startswith("Not sent:")
    if trouble == "down":
        assert "cannot be reached" in said and "tried again" in said
    else:
        assert trouble in said and ("tried again" in said) == trouble.startswith("4")
    assert len(desk.relay.messages) == before
    # Nothing went out, so the draft stays where the agents look.
    assert len(imap_folder(desk.user, "Drafts", TOKEN_HEADER, draft.token)) == 1
    assert draft_of(desk, pk).body == draft.body
    if trouble.startswith("5"):
        # Refused for good: the agent's text is kept in the editor, to change and send.
        assert w.page.locator("strong.status").inner_text() == "send_failed"
        assert marker in w.page.locator("form.editor textarea").input_value()
        w.page.click("form.editor button[type=submit]")
    else:
        assert w.page.locator("strong.status").inner_text() == "sending"
        assert said in w.page.locator("span.reason").inner_text()
        w.page.click("form[action$='/retry-send'] button")
    w.page.wait_for_selector("p.flash.ok:text-is('Reply sent.')")
    assert w.page.locator("strong.status").inner_text() == "sent"
    replies = desk.relay.messages[before:]
    assert len(replies) == 1 and marker.encode() in replies[0][2]
    assert imap_folder(desk.user, "Drafts", TOKEN_HEADER, draft.token) == []


def test_escalate_needs_a_cloud_llm(desk: Desk, browser: Any) -> None:
    pk = desk.pk("address")
    w = open_page(browser)
    login(w.page, desk)
    w.page.goto(f"{desk.web.url}/messages/{pk}")
    assert w.page.locator("form[action$='/escalate']").count() == 0  # none is configured
    # Asked anyway (an old page, a hand-made request): refused, nothing changes.
    w.page.evaluate("""pk => { const f = document.querySelector("form.editor");
        f.action = `/messages/${pk}/escalate`; f.submit(); }""", pk)
    w.page.wait_for_selector("p.flash.error")
    assert "no cloud LLM is configured" in w.page.locator("p.flash.error").inner_text()
    assert desk.message(pk).status == "drafted"
    with desk.database.session() as s:
        assert ("desk", "escalated") not in s.execute(
            select(Event.stage, Event.outcome).where(Event.message_pk == pk)).all()


def test_csrf_login_roles_and_redirects(desk: Desk) -> None:
    base = desk.web.url
    anonymous = requests.get(base + "/", allow_redirects=False, timeout=10)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert requests.get(f"{base}/messages/1", allow_redirects=False,
                        timeout=10).status_code == 302

    agent = requests.Session()
    form = agent.get(base + "/login", timeout=10).text
    token = form.split('name="csrf_token" value="')[1].split('"')[0]
    # An open redirect after login is refused: off-site targets go to the queue.
    logged = agent.post(base + "/login", data={"csrf_token": token, "username": AGENT,
                                               "password": AGENT_PASSWORD,
                                               "next": "//evil.example/x"},
                        allow_redirects=False, timeout=10)
    assert logged.status_code == 302 and logged.headers["Location"] == "/"
    cookie = logged.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert agent.get(base + "/admin/users", timeout=10).status_code == 403
    pk = desk.pk("address")
    refused = agent.post(f"{base}/messages/{pk}/send", data={"body": "hello"}, timeout=10)
    assert refused.status_code == 400 and "CSRF" in refused.text
    refused = agent.post(f"{base}/messages/{pk}/elsewhere", data={}, timeout=10)
    assert refused.status_code == 400
    assert desk.message(pk).status == "drafted"

    admin = requests.Session()
    form = admin.get(base + "/login", timeout=10).text
    token = form.split('name="csrf_token" value="')[1].split('"')[0]
    admin.post(base + "/login", data={"csrf_token": token, "username": ADMIN,
                                      "password": ADMIN_PASSWORD}, timeout=10)
    assert AGENT in admin.get(base + "/admin/users", timeout=10).text


def test_failed_logins_are_rate_limited_across_desk_processes(desk: Desk,
                                                              tmp_path: Path) -> None:
    # The production server runs several desk processes: a guesser spread over them is
    # counted once (the failures are in the database).
    other = DeskProcess(desk.config, tmp_path / "web.log").start()

    def attempt(base: str, password: str) -> requests.Response:
        s = requests.Session()
        form = s.get(base + "/login", timeout=10).text
        token = form.split('name="csrf_token" value="')[1].split('"')[0]
        return s.post(base + "/login", data={"csrf_token": token, "username": AGENT,
                                              "password": password}, timeout=10)

    try:
        codes = [attempt(base, "wrong").status_code
                 for base in (other.url, desk.web.url, other.url, desk.web.url, other.url,
                              desk.web.url)]
        assert codes == [401] * 5 + [429]
        for base in (other.url, desk.web.url):
            blocked = attempt(base, AGENT_PASSWORD)
            assert blocked.status_code == 429 and "Too many failed logins" in blocked.text
    finally:
        other.stop()
        from mailbot.db.web import LoginFailure

        with desk.database.session() as s:  # the later tests log in from this address
            s.execute(delete(LoginFailure))
