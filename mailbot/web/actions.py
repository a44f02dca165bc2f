"""What an agent does on a message page; each action is an audit event with the agent's name.

Claims: opening the draft to edit claims the message (others see who holds it, and cannot
send or reject it) until the claim is released by hand, by the action, or it times out.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mailbot.audit.events import record_event
from mailbot.config import AccountSettings, Config
from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Event, Message, MessageStatus
from mailbot.db.outcomes import (
    DraftOutcome,
    HumanLabel,
    LabelKind,
    LabelSource,
    Outcome,
    OutcomeSource,
    RejectReason,
)
from mailbot.db.session import Database
from mailbot.db.web import ReviewClaim, ReviewIndex, Role
from mailbot.errors import MailbotError
from mailbot.outbox.queue import enqueue_draft_removal
from mailbot.web import auth
from mailbot.web.message import claim_active, label_choices

log = logging.getLogger(__name__)

# Statuses a reply may be sent, rejected or set aside from.
OPEN_STATUSES = (MessageStatus.DRAFTED, MessageStatus.NEEDS_HUMAN, MessageStatus.FAILED,
                 MessageStatus.QUARANTINED, MessageStatus.SEND_FAILED, MessageStatus.ESCALATING)


class Refused(MailbotError):
    """The action is not possible now (someone else holds the message, it was sent...)."""


def take_claim(session: Session, message: Message, agent: str, minutes: float, *,
               force: bool = False) -> ReviewClaim:
    """Claim the message for `agent` (or renew the claim); Refused if another holds it."""
    now = utcnow()
    claim = session.get(ReviewClaim, message.id, with_for_update=True)
    if claim is not None and claim.agent != agent and claim.expires_at > now and not force:
        raise Refused(f"{claim.agent} is working on this message (until "
                      f"{claim.expires_at:%H:%M} UTC); ask them, or a manager can release it")
    if claim is None:
        claim = ReviewClaim(message_pk=message.id, agent=agent, claimed_at=now,
                            expires_at=now + timedelta(minutes=minutes))
        session.add(claim)
        record_event(session, "desk", "claimed", message_pk=message.id,
                     mailbox_id=message.mailbox_id, actor=agent, details={})
    else:
        if claim.agent != agent:
            record_event(session, "desk", "claimed", message_pk=message.id,
                         mailbox_id=message.mailbox_id, actor=agent,
                         details={"taken_from": claim.agent})
            claim.agent = agent
            claim.claimed_at = now
        claim.expires_at = now + timedelta(minutes=minutes)
    return claim


def release_claim(session: Session, message: Message, agent: str) -> None:
    session.execute(delete(ReviewClaim).where(ReviewClaim.message_pk == message.id))


def correct_label(session: Session, message: Message, agent: str, kind: str, value: str,
                  name: str | None = None) -> HumanLabel:
    """Record an agent's correction as a human label (and refresh the queue's index)."""
    try:
        label_kind = LabelKind(kind)
    except ValueError:
        raise Refused(f"cannot correct {kind!r}: expected intent, priority, sentiment, "
                      "language or field") from None
    value = value.strip()
    if not value:
        raise Refused("the corrected value is empty")
    choices = label_choices()
    if label_kind in (LabelKind.INTENT, LabelKind.PRIORITY, LabelKind.SENTIMENT) and (
            value not in choices[label_kind]):
        raise Refused(f"{kind} {value!r} is not one of {', '.join(choices[label_kind])}")
    if label_kind == LabelKind.FIELD and not name:
        raise Refused("a field correction needs the field's name")
    previous = _model_value(session, message.id, label_kind, name)
    label = HumanLabel(message_pk=message.id, kind=label_kind,
                       name=name if label_kind == LabelKind.FIELD else None, value=value[:2000],
                       previous=previous, source=LabelSource.DESK, agent=agent,
                       created_at=utcnow())
    session.add(label)
    index = session.get(ReviewIndex, message.id)
    if index is not None and label_kind in (LabelKind.INTENT, LabelKind.PRIORITY,
                                            LabelKind.LANGUAGE):
        setattr(index, label_kind.value, value[:100])
    # Field values are personal data: the event names the field, not the value.
    details: dict[str, Any] = {"kind": label_kind.value}
    if label_kind == LabelKind.FIELD:
        details["field"] = name
    else:
        details.update({"previous": previous, "value": value})
    record_event(session, "desk", "corrected", message_pk=message.id,
                 mailbox_id=message.mailbox_id, actor=agent, details=details)
    return label


def _model_value(session: Session, pk: int, kind: LabelKind, name: str | None) -> str | None:
    if kind == LabelKind.FIELD:
        from mailbot.db.models import MessageFacts

        facts = session.get(MessageFacts, pk)
        entry = ((facts.data or {}).get("extraction", {}).get("fields", {}).get(name)
                 if facts is not None else None)
        first = entry[0] if isinstance(entry, list) and entry else entry
        value = first.get("value") if isinstance(first, dict) else None
        return None if value is None else str(value)
    details = session.scalar(select(Event.details).where(
        Event.message_pk == pk, Event.stage == "classify").order_by(Event.id.desc()))
    found = (details or {}).get(kind.value)
    label = found.get("label") if isinstance(found, dict) else found
    return None if label is None else str(label)


def settle_without_reply(session: Session, message: Message, agent: str, outcome: Outcome,
                         reason: str | None, note: str | None,
                         account: AccountSettings | None = None) -> None:
    """Rejected or handled elsewhere: the draft's outcome, the status, the audit event, and
    the stale draft out of the account's Drafts folder (through the outbox)."""
    draft = session.scalar(select(DraftRecord).where(DraftRecord.message_pk == message.id))
    if draft is not None and account is not None:
        enqueue_draft_removal(session, message, draft, account.name, account.drafts_folder)
    session.add(DraftOutcome(
        message_pk=message.id, draft_id=draft.id if draft else None, outcome=outcome,
        reason=reason, note=(note or None), proposed_text=draft.body if draft else None,
        source=OutcomeSource.DESK, agent=agent, template=draft.template if draft else None,
        model=draft.model if draft else None,
        model_version=draft.model_version if draft else None,
        language=draft.language if draft else None, created_at=utcnow()))
    message.status = (MessageStatus.REJECTED if outcome == Outcome.REJECTED
                      else MessageStatus.HANDLED_ELSEWHERE)
    message.status_reason = f"{outcome.value} by {agent}" + (f": {reason}" if reason else "")
    message.updated_at = utcnow()
    release_claim(session, message, agent)
    record_event(session, "desk", outcome.value, message_pk=message.id,
                 mailbox_id=message.mailbox_id, actor=agent,
                 details={"reason": reason, "has_note": bool(note)})


def install_actions(app: Flask, config: Config, database: Database) -> None:
    minutes = config.web.claim_minutes

    def locked(pk: int, s: Session) -> Message:
        message = s.get(Message, pk, with_for_update=True)
        if message is None:
            abort(404)
        from mailbot.web.app import _visible_message

        _visible_message(s, pk)
        return message

    def back(pk: int) -> Any:
        return redirect(url_for("message_page", pk=pk))

    @app.post("/messages/<int:pk>/claim")
    @auth.require(Role.AGENT)
    def claim(pk: int) -> Any:
        force = request.form.get("force") == "1" and g.user.at_least(Role.MANAGER)
        error = None
        until: datetime | None
        with database.session() as s:
            message = locked(pk, s)
            try:
                held = take_claim(s, message, g.user.name, minutes, force=force)
                agent, until = held.agent, held.expires_at
            except Refused as exc:
                error = str(exc)
                current = s.get(ReviewClaim, pk)
                agent, until = (current.agent, current.expires_at) if current else ("", None)
        if request.headers.get("HX-Request"):
            return render_template("claim.html.j2", pk=pk, agent=agent, until=until,
                                   error=error, claimed=True)
        if error:
            flash(error, "error")
        return back(pk)

    @app.post("/messages/<int:pk>/release")
    @auth.require(Role.AGENT)
    def release(pk: int) -> Any:
        with database.session() as s:
            message = locked(pk, s)
            held = s.get(ReviewClaim, pk)
            if held is not None and held.agent != g.user.name and claim_active(held) and (
                    not g.user.at_least(Role.MANAGER)):
                flash(f"{held.agent} holds this message; only they or a manager can release it",
                      "error")
                return back(pk)
            if held is not None:
                release_claim(s, message, g.user.name)
                record_event(s, "desk", "released", message_pk=pk,
                             mailbox_id=message.mailbox_id, actor=g.user.name,
                             details={"holder": held.agent})
        return back(pk)

    def drain_and_tell(sent_message: str | None = None) -> None:
        """Perform the sends waiting in the outbox now and tell the agent how it went."""
        from mailbot.outbox.send import drain_sends

        report = drain_sends(config, database, app.extensions["mailbot"]["owner"])
        if report.errors:
            flash("; ".join(report.errors), "error")
        elif sent_message and (report.sent or report.confirmed):
            flash(sent_message, "ok")

    def imap_account(s: Session, message: Message) -> AccountSettings | None:
        from mailbot.outbox.send import account_of

        name = account_of(s, message)
        return next((a for a in config.accounts if a.name == name), None)

    def withdraw_and_tell() -> None:
        """Remove withdrawn drafts from the Drafts folder now; say so if it must wait."""
        from mailbot.outbox.withdraw import withdraw_now

        for error in withdraw_now(config, database, app.extensions["mailbot"]["owner"]):
            flash(error, "error")

    @app.post("/messages/<int:pk>/label")
    @auth.require(Role.AGENT)
    def label(pk: int) -> Any:
        try:
            with database.session() as s:
                message = locked(pk, s)
                correct_label(s, message, g.user.name, request.form.get("kind", ""),
                              request.form.get("value", ""), request.form.get("name") or None)
            flash("Correction saved.", "ok")
        except Refused as exc:
            flash(str(exc), "error")
        return back(pk)

    @app.post("/messages/<int:pk>/send")
    @auth.require(Role.AGENT)
    def send(pk: int) -> Any:
        from mailbot.outbox.send import SendRefused, enqueue_send

        body = request.form.get("body", "")
        if not body.strip():
            flash("The reply is empty; write one before sending.", "error")
            return back(pk)
        try:
            with database.session() as s:
                message = locked(pk, s)
                if message.status not in OPEN_STATUSES:
                    raise Refused(f"this message is {message.status}; it cannot be sent again")
                take_claim(s, message, g.user.name, minutes)
                draft = s.scalar(select(DraftRecord).where(DraftRecord.message_pk == pk))
                enqueue_send(s, config, message, body=body, agent=g.user.name, draft=draft,
                             subject=request.form.get("subject") or None,
                             agent_display=g.user.name)
        except (Refused, SendRefused) as exc:
            flash(str(exc), "error")
            return back(pk)
        drain_and_tell(sent_message="Reply sent.")
        return back(pk)

    @app.post("/messages/<int:pk>/retry-send")
    @auth.require(Role.AGENT)
    def retry_send(pk: int) -> Any:
        from mailbot.outbox.send import send_now

        with database.session() as s:
            locked(pk, s)
            send_now(s, pk)
        drain_and_tell(sent_message="Reply sent.")
        return back(pk)

    @app.post("/messages/<int:pk>/resolve")
    @auth.require(Role.AGENT)
    def resolve(pk: int) -> Any:
        from mailbot.outbox.send import SendRefused, resolve_uncertain

        try:
            with database.session() as s:
                message = locked(pk, s)
                resolve_uncertain(s, message, g.user.name,
                                  was_sent=request.form.get("was_sent") == "1")
        except SendRefused as exc:
            flash(str(exc), "error")
        return back(pk)

    @app.post("/messages/<int:pk>/escalate")
    @auth.require(Role.AGENT)
    def escalate(pk: int) -> Any:
        """Queue the message for the cloud LLM's new draft (see mailbot.llm.ondemand for why
        the worker makes the call, not this request)."""
        from mailbot.llm.ondemand import EscalationRefused, request_escalation

        try:
            with database.session() as s:
                message = locked(pk, s)
                if message.status not in OPEN_STATUSES:
                    raise Refused(f"this message is {message.status}; it cannot be escalated")
                if message.status == MessageStatus.ESCALATING:
                    raise Refused("this message is already waiting for the cloud LLM")
                take_claim(s, message, g.user.name, minutes)
                request_escalation(s, config, message, g.user.name)
        except (Refused, EscalationRefused) as exc:
            flash(f"Not escalated: {exc}", "error")
            return back(pk)
        flash("Escalated: the worker asks the cloud LLM at its next poll; the new draft "
              "then replaces this one, here and in the Drafts folder.", "ok")
        return back(pk)

    @app.post("/messages/<int:pk>/reject")
    @auth.require(Role.AGENT)
    def reject(pk: int) -> Any:
        return _settle(pk, Outcome.REJECTED)

    @app.post("/messages/<int:pk>/elsewhere")
    @auth.require(Role.AGENT)
    def elsewhere(pk: int) -> Any:
        return _settle(pk, Outcome.HANDLED_ELSEWHERE)

    def _settle(pk: int, outcome: Outcome) -> Any:
        reason = request.form.get("reason") or None
        if outcome == Outcome.REJECTED:
            try:
                reason = RejectReason(reason or "").value
            except ValueError:
                flash("Pick the reason for rejecting the draft.", "error")
                return back(pk)
        try:
            with database.session() as s:
                message = locked(pk, s)
                if message.status not in OPEN_STATUSES:
                    raise Refused(f"this message is {message.status} already")
                take_claim(s, message, g.user.name, minutes)
                settle_without_reply(s, message, g.user.name, outcome, reason,
                                     request.form.get("note", "")[:2000],
                                     account=imap_account(s, message))
        except Refused as exc:
            flash(str(exc), "error")
            return back(pk)
        withdraw_and_tell()
        return back(pk)
