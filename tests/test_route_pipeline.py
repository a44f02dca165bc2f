"""The whole worker on the real Dovecot with the fake cloud LLM: easy mail is drafted by the
small model's templates, hard mail by the cloud LLM, and the audit log says which and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Event, Message
from mailbot.db.session import Database
from mailbot.resources import data_dir
from tests.support.dovecot import ImapUser
from tests.test_draft_delivery import drafts_in_folder, run_once, write_config

SAMPLES = data_dir() / "samples"


def test_easy_mail_stays_local_and_hard_mail_goes_to_the_cloud(
    tmp_path: Path, imap_user: ImapUser, sqlite_url: str, encoder_dir: Path, fake_llm: Any
) -> None:
    names = ["01_order_status.eml", "09_complaint_angry.eml", "13_thread_reply.eml"]
    imap_user.append_many([(SAMPLES / name).read_bytes() for name in names])
    config = write_config(tmp_path, imap_user, sqlite_url, encoder_dir.parent)
    with config.open("a") as handle:
        handle.write(f'[llm]\nbase_url = "{fake_llm.base_url}"\nmodel = "fake-model"\n')
        # The seed heads are fairly sure (about 0.75) that the bulk-order quote is a product
        # question; a team with a stricter threshold sends it to the cloud.
        handle.write("[route]\nmin_intent_confidence = 0.85\n")
    done = run_once(config)
    assert done.returncode == 0, done.stderr
    assert len(drafts_in_folder(imap_user)) == 3

    database = Database(sqlite_url)
    with database.session() as session:
        subjects = dict(session.execute(select(Message.id, Message.subject)).all())
        routes = {subjects[e.message_pk]: e for e in
                  session.scalars(select(Event).where(Event.stage == "route"))}
        drafts = {subjects[d.message_pk]: d for d in session.scalars(select(DraftRecord))}
        llm_calls = session.scalars(select(Event).where(Event.stage == "llm")).all()
    easy, angry, unsure = (routes[s] for s in (
        "Where is my order #A10234?",
        "THIRD TIME asking - damaged jacket, I want my money back NOW",
        "RE: Bulk order quote Q-2024-0311"))
    assert easy.outcome == "slm" and easy.details["reasons"] == []
    assert angry.outcome == "llm" and angry.details["codes"] == ["angry_high_priority"]
    assert unsure.outcome == "llm" and "low_confidence" in unsure.details["codes"]
    assert all(r["text"] for r in angry.details["reasons"] + unsure.details["reasons"])
    assert drafts["Where is my order #A10234?"].model == "template"
    assert drafts["THIRD TIME asking - damaged jacket, I want my money back NOW"].model == \
        "fake-model"
    # One reply call for the angry customer; classification and reply for the unsure case.
    assert sorted(e.details["task"] for e in llm_calls) == ["classify", "reply", "reply"]
    for request in fake_llm.chat_requests:
        for value in ("Rachel", "Hughes", "A10198", "mark.thompson@contoso.example",
                      "Mark Thompson"):
            assert value not in request.text()
