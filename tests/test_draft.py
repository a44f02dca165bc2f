"""Reply drafting: the right template, filled and threaded; problems fail loudly."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailbot.compose.mime import TOKEN_HEADER, reply_subject
from mailbot.compose.reply import DraftOptions, NoDraft, compose_draft
from mailbot.compose.templates import ReplyTemplates, TemplateProblem
from mailbot.config import config_from_dict
from mailbot.parse.message import Address
from mailbot.parse.mime import parse_message
from mailbot.pipeline.runner import dry_run
from mailbot.pipeline.wiring import build_stages
from mailbot.resources import data_dir
from tests.support.mail import out_of_office, support_email

SUPPORT = Address("Northwind Support", "support@northwind.example")
OPTIONS = DraftOptions(company="Northwind", signature="Kind regards,\nNorthwind Support",
                       from_name="Northwind Support", signatures={"de": "Viele Grüße\nNorthwind"})


class Found:
    """An extraction result as the extract stage hands it on."""

    def __init__(self, fields: dict[str, str], missing: tuple[str, ...] = ()) -> None:
        from mailbot.fields import FieldValue

        self.fields = {name: (FieldValue(name, value, "pattern", (0, len(value)), 0.9, value),)
                       for name, value in fields.items()}
        self.missing = missing


def sample(name: str) -> bytes:
    return (data_dir() / "samples" / name).read_bytes()


def test_reply_is_threaded_and_marked_auto_generated() -> None:
    message = parse_message(sample("01_order_status.eml"))
    draft = compose_draft(message, "order_status", "en", SUPPORT, ReplyTemplates(), OPTIONS,
                          extraction=Found({"order_id": "A10234"}))
    assert not isinstance(draft, NoDraft)
    reply = message_from_bytes(draft.mime, policy=policy.default)
    assert reply["From"] == "Northwind Support <support@northwind.example>"
    assert reply["To"].addresses[0].addr_spec == "emma.clarke@example.com"
    assert reply["Subject"] == "Re: Where is my order #A10234?"
    assert reply["In-Reply-To"] == f"<{message.message_id}>"
    assert reply["References"].split()[-1] == f"<{message.message_id}>"
    assert reply["Auto-Submitted"] == "auto-generated"
    assert reply[TOKEN_HEADER] == draft.token and reply["Message-ID"] == f"<{draft.message_id}>"
    body = reply.get_body(("plain",)).get_content()
    assert body.startswith("Hello Emma,")
    assert "order A10234" in body and body.rstrip().endswith("Northwind Support")
    assert draft.template == "replies/order_status.en.txt.j2" and not draft.needs_review


def test_reply_to_is_honoured_and_prefixes_do_not_pile_up() -> None:
    raw = support_email(7, subject="RE: my order", headers={"Reply-To": "Ops <ops@example.org>"})
    draft = compose_draft(parse_message(raw), "feedback", "en", SUPPORT, ReplyTemplates(),
                          OPTIONS)
    assert not isinstance(draft, NoDraft)
    assert draft.to.email == "ops@example.org"
    assert draft.subject == "RE: my order"
    assert reply_subject("Aw: Bestellung") == "Aw: Bestellung"
    assert reply_subject("Order") == "Re: Order"


def test_missing_required_field_is_asked_for() -> None:
    message = parse_message(support_email(1, subject="Where is my parcel?",
                                          body="Hi, my parcel has not arrived yet. Jane"))
    draft = compose_draft(message, "order_status", "en", SUPPORT, ReplyTemplates(), OPTIONS,
                          extraction=Found({}, missing=("order_id",)))
    assert not isinstance(draft, NoDraft)
    assert "could you please reply with your order number" in draft.body
    assert draft.missing == ("order_id",)


def test_customer_language_and_fallback_with_review_flag() -> None:
    german = parse_message(sample("11_german_return.eml"))
    draft = compose_draft(german, "refund", "de", SUPPORT, ReplyTemplates(), OPTIONS,
                          extraction=Found({"order_id": "A10488"}))
    assert not isinstance(draft, NoDraft)
    assert draft.language == "de" and draft.body.startswith("Guten Tag Jürgen,")
    assert "Viele Grüße" in draft.body and not draft.needs_review
    # No Swedish templates: an English draft, flagged for a person to review.
    fallback = compose_draft(german, "billing", "sv", SUPPORT, ReplyTemplates(), OPTIONS)
    assert not isinstance(fallback, NoDraft)
    assert fallback.language == "en" and fallback.needs_review
    assert "no 'sv' template" in fallback.review_reasons[0]


def test_intent_without_template_gets_no_draft() -> None:
    message = parse_message(support_email(2))
    result = compose_draft(message, "other", "en", SUPPORT, ReplyTemplates(), OPTIONS)
    assert isinstance(result, NoDraft) and "no reply template" in result.reason


def test_missing_template_variable_fails_loudly(tmp_path: Path) -> None:
    replies = tmp_path / "replies"
    replies.mkdir()
    (replies / "refund.en.txt.j2").write_text(
        '{% extends "layout.en.txt.j2" %}{% block body %}Refund for {{ fields.iban }}.'
        "{% endblock %}")
    message = parse_message(sample("02_refund_request.eml"))
    problem = r"replies/refund.en.txt.j2: .*has no attribute 'iban'"
    with pytest.raises(TemplateProblem, match=problem):
        compose_draft(message, "refund", "en", SUPPORT, ReplyTemplates([tmp_path]), OPTIONS,
                      extraction=Found({"order_id": "A10311"}))


def test_templates_are_sandboxed(tmp_path: Path) -> None:
    replies = tmp_path / "replies"
    replies.mkdir()
    (replies / "feedback.en.txt.j2").write_text("{{ fields.__class__.__mro__ }}")
    with pytest.raises(TemplateProblem):
        ReplyTemplates([tmp_path]).render("feedback.en.txt.j2", {"fields": {}})


def test_pipeline_drafts_routine_mail_and_never_auto_replies(encoder_dir: Path) -> None:
    config = config_from_dict({"models": {"dir": str(encoder_dir.parent)},
                               "drafts": {"support_address": "help@northwind.example"}})
    stages = build_stages(config)
    result = dry_run(stages, sample("03_cancellation.eml"))
    draft = result.case.draft
    assert draft is not None and draft.template == "replies/cancellation.en.txt.j2"
    assert "A10402" in draft.body and draft.sender.email == "help@northwind.example"
    assert draft.fields["order_id"] == "A10402"
    skipped = dry_run(stages, out_of_office(3))
    assert [step.stage for step in skipped.steps] == ["parse"]
    assert skipped.case.draft is None


def test_a_model_written_body_goes_in_the_shared_layout() -> None:
    message = parse_message(sample("09_complaint_angry.eml"))
    draft = compose_draft(message, "complaint", "en", SUPPORT, ReplyTemplates(), OPTIONS,
                          written_body="We are sorry.\n\nA replacement is on its way.",
                          model="cloud-model")
    assert not isinstance(draft, NoDraft)
    assert draft.template == "replies/written.en.txt.j2" and draft.model == "cloud-model"
    assert draft.body.startswith("Hello ") and "A replacement is on its way." in draft.body
    assert draft.body.rstrip().endswith("Northwind Support")


def test_template_version_follows_edits_on_disk(tmp_path: Path) -> None:
    import os

    replies = tmp_path / "replies"
    replies.mkdir()
    template = replies / "feedback.en.txt.j2"
    template.write_text('{% extends "layout.en.txt.j2" %}{% block body %}Thanks!{% endblock %}')
    templates = ReplyTemplates([tmp_path])
    first = templates.version("feedback.en.txt.j2")
    assert templates.version("feedback.en.txt.j2") == first
    template.write_text('{% extends "layout.en.txt.j2" %}{% block body %}Thank you!{% endblock %}')
    later = template.stat().st_mtime + 5
    os.utime(template, (later, later))
    assert templates.version("feedback.en.txt.j2") != first
