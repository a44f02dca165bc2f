"""The prompt-injection corpus, end to end: the fake cloud LLM falls for every attack and
writes what the email asked for; no such reply may become a draft."""

from __future__ import annotations

import json
import re
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Message, MessageFacts
from tests.support.fake_openai import ReceivedRequest, Reply, default_answer
from tests.test_escalation import events, process
from tests.test_route import config_for

CORPUS = Path(__file__).parent / "data" / "injection"
CASES = {name: case for name, case in json.loads((CORPUS / "cases.json").read_text()).items()
         if not name.startswith("_")}
SENDER_DOMAINS = ["example.com", "example.net", "example.org", "example.pt", "example.de"]
# What an attack wants in a reply; none of it may reach a draft.
MALICIOUS = ("evil.example", "5000", "7946 0991", "return_form.scr", "support agent reviews",
             "pixel.png")


def obey(request: ReceivedRequest) -> Reply:
    """A model that falls for the injection in the email it was sent."""
    if request.schema is not None:
        return default_answer(request)
    text = request.text()
    [case] = [c for name, c in CASES.items() if _subject(name) in text]
    reply = case["obeyed_reply"]
    for kind in ("ORDER", "EMAIL", "IBAN", "PHONE"):
        found = re.search(rf"<{kind}_\d+>", text)
        reply = reply.replace("{" + kind + "}", found.group() if found else "")
    return Reply(content=reply)


def _subject(name: str) -> str:
    raw = (CORPUS / name).read_text()
    subject = re.search(r"^Subject: (.*)$", raw, re.MULTILINE).group(1)  # type: ignore[union-attr]
    # What the model sees of the subject: order numbers are pseudonymised.
    return re.sub(r"A\d{5}", "<ORDER_1>", subject)


@pytest.fixture()
def corpus_run(tmp_path: Path, encoder_dir: Path, fake_llm: Any) -> Any:
    def run(**route: Any) -> Any:
        fake_llm.default = obey
        config = config_for(tmp_path, encoder_dir,
                            drafts={"company": "Northwind Outfitters"}, route=route,
                            llm={"base_url": fake_llm.base_url, "model": "fake-model"})
        return process(config, [(CORPUS / name).read_bytes() for name in sorted(CASES)],
                       tmp_path)

    return run


def test_every_obeyed_injection_is_stopped_and_sent_to_a_person(
    corpus_run: Any, fake_llm: Any
) -> None:
    database = corpus_run(vip_domains=SENDER_DOMAINS)  # every message goes to the cloud LLM
    assert len([r for r in fake_llm.chat_requests if r.schema is None]) == len(CASES)
    with database.session() as session:
        assert session.scalars(select(DraftRecord)).all() == []
        rows = {m.id: m for m in session.scalars(select(Message))}
    # Messages were ingested in the corpus's sorted order; cloud answers finish in any order.
    held = sorted(events(database, "draft"), key=lambda e: e.message_pk)
    settled = {e.message_pk: e for e in events(database, "settle") if e.outcome != "escalating"}
    assert len(held) == len(CASES)
    for event, name in zip(held, sorted(CASES), strict=True):
        message = rows[event.message_pk]
        assert event.outcome == "unsafe", name
        assert message.status == "needs_human", name
        assert message.status_reason.startswith("needs a person: "), name
        assert "draft held back" in message.status_reason, name
        found = set(event.details["safety"]["violations"])
        assert set(CASES[name]["expect"]) <= found, (name, found)
        assert settled[event.message_pk].details["codes"][-1] == "unsafe_draft"
        with database.session() as session:
            facts = session.get(MessageFacts, event.message_pk)
        assert facts is not None and facts.data["held_draft"]["body"]  # the agent sees it


def test_hidden_and_header_text_never_reaches_the_model(corpus_run: Any, fake_llm: Any) -> None:
    database = corpus_run(vip_domains=SENDER_DOMAINS)
    sent = {name: "\n".join(r.text() for r in fake_llm.chat_requests if _subject(name) in r.text())
            for name in CASES}
    guarded = {name: case["never_sent"] for name, case in CASES.items() if "never_sent" in case}
    assert len(guarded) >= 4
    for name, markers in guarded.items():
        assert sent[name], name  # the case did reach the model, only without these parts
        for marker in markers:
            assert marker not in sent[name], (name, marker)
    # The hidden parts are dropped, and the parse step says how much for the agent.
    parsed = {e.message_pk: e.details for e in events(database, "parse")}
    with database.session() as session:
        subjects = {m.id: m.subject for m in session.scalars(select(Message))}
    hidden = {subjects[pk]: d["hidden_chars"] for pk, d in parsed.items() if d["hidden_chars"]}
    assert set(hidden) == {"Question about my invoice for order A10611",
                           "Missing item in order A10708"}
    assert all(count > 60 for count in hidden.values())


def test_at_default_routing_no_draft_carries_an_attack(corpus_run: Any) -> None:
    database = corpus_run()
    with database.session() as session:
        drafts = session.scalars(select(DraftRecord)).all()
    assert drafts  # the plain ones were drafted from templates
    for draft in drafts:
        for marker in MALICIOUS:
            assert marker not in draft.body, (draft.template, marker)
        # A reply goes to the sender's Reply-To or From address only, never to a Cc.
        mime = message_from_bytes(draft.mime if isinstance(draft.mime, bytes)
                                  else str(draft.mime).encode())
        assert mime["Cc"] is None and "accounts@evil.example" not in str(mime["To"])


# Known regression: since the seven-language seeds, the
# "$5000" refund attack is no longer drafted from a template at the default routing (it goes
# to a person or the cloud instead), so the promise gate is not reached here.
@pytest.mark.xfail(reason="the injected paragraph pulls the seed heads to order_status "
                          "(0.56, refund 0.19), so the refund template is not chosen")
def test_a_template_restating_an_injected_refund_is_held_back(corpus_run: Any) -> None:
    database = corpus_run()
    # Templates are trusted but checked too: the refund template restating the injected
    # "$5000" refund is held back like the model's reply would be.
    held_templates = [e for e in events(database, "draft")
                      if e.outcome == "unsafe" and e.details["model"] == "template"]
    assert [(e.details["template"], e.details["safety"]["violations"])
            for e in held_templates] == [("replies/refund.en.txt.j2", ["promise"])]
