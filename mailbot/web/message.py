"""The message page: the customer's mail and everything that explains what mailbot made of it.

Customer mail is attacker-controlled: it is handed to the templates as plain text (HTML
mail as the text the parser extracted), and the templates escape every value.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.kb_models import KBPassage
from mailbot.db.models import Event, Message, MessageFacts, RawMessage
from mailbot.db.outbox import OutboxEntry
from mailbot.db.outcomes import DraftOutcome, HumanLabel
from mailbot.db.web import ReviewClaim
from mailbot.parse.message import InboundMessage


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of the customer's text; `field` names the extracted value it is, if any."""

    text: str
    field: str | None = None


@dataclass
class MessageView:
    """Everything the message page shows."""

    message: Message
    mailbox: str
    inbound: InboundMessage | None
    segments: list[Segment]
    thread: list[Message]
    classification: dict[str, Any]
    fields: list[dict[str, Any]]
    missing: list[str]
    rejected: list[Any]
    passages: list[dict[str, Any]]
    route: dict[str, Any]
    safety: dict[str, Any]
    models: list[dict[str, Any]]
    draft: DraftRecord | None
    claim: ReviewClaim | None
    labels: list[HumanLabel]
    outcomes: list[DraftOutcome]
    send: OutboxEntry | None
    history: list[Event]
    draft_details: dict[str, Any] = field(default_factory=dict)


@cache
def label_choices() -> dict[str, list[str]]:
    """The labels an agent may pick when correcting (those of the seed data)."""
    from mailbot.resources import data_dir

    choices: dict[str, list[str]] = {}
    for kind, name in (("intent", "seed.csv"), ("priority", "priority.csv"),
                       ("sentiment", "sentiment.csv")):
        path = data_dir() / "intents" / name
        with path.open(encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            column = "label" if reader.fieldnames and "label" in reader.fieldnames else (
                (reader.fieldnames or ["label"])[-1])
            choices[kind] = sorted({row[column] for row in reader if row.get(column)})
    return choices


def highlight(text: str, spans: list[tuple[int, int, str]]) -> list[Segment]:
    """The text cut into runs, the extracted values' spans marked (overlaps: first wins)."""
    segments: list[Segment] = []
    position = 0
    for start, end, name in sorted(spans):
        if start < position or end <= start or end > len(text):
            continue
        if start > position:
            segments.append(Segment(text[position:start]))
        segments.append(Segment(text[start:end], name))
        position = end
    if position < len(text):
        segments.append(Segment(text[position:]))
    return segments


def _values(entry: Any) -> list[dict[str, Any]]:
    return [e for e in (entry if isinstance(entry, list) else [entry]) if isinstance(e, dict)]


def _display(value: Any) -> str:
    if isinstance(value, dict) and "amount" in value:
        return f"{value.get('amount')} {value.get('currency') or ''}".strip()
    return "" if value is None else str(value)


def _fields(found: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[int, int, str]]]:
    """One row per field and value (an order number in the subject and the body is one
    value, found twice), and every span to mark in the text."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in found.items():
        for value in _values(entry):
            span = value.get("span")
            shown = _display(value.get("value"))
            row = rows.setdefault((name, shown), {
                "name": name, "value": shown, "type": value.get("type"),
                "confidence": value.get("confidence"), "spans": []})
            confidence = value.get("confidence")
            if isinstance(confidence, int | float) and (
                    not isinstance(row["confidence"], int | float)
                    or confidence > row["confidence"]):
                row["confidence"] = confidence
            if isinstance(span, list) and len(span) == 2 and all(isinstance(s, int)
                                                                 for s in span):
                row["spans"].append(span)
                spans.append((span[0], span[1], name))
    return list(rows.values()), spans


def build_view(session: Session, message: Message, mailbox: str) -> MessageView:
    """Gather the page's facts from the ledger, the events and the draft."""
    from mailbot.parse.mime import parse_message

    raw = session.get(RawMessage, message.id)
    inbound = parse_message(raw.raw) if raw is not None else None
    events = list(session.scalars(select(Event).where(Event.message_pk == message.id)
                                  .order_by(Event.id)))
    latest: dict[str, Event] = {}
    for event in events:
        latest[event.stage] = event
    facts_row = session.get(MessageFacts, message.id)
    facts = (facts_row.data or {}) if facts_row is not None else {}
    extraction = facts.get("extraction") or {}
    extract_event = latest.get("extract")
    extract_details = extract_event.details if extract_event is not None else {}

    fields, spans = _fields(extraction.get("fields") or {})
    text = inbound.text_with_signature if inbound is not None else ""
    segments = highlight(text, spans)

    draft = session.scalar(select(DraftRecord).where(DraftRecord.message_pk == message.id))
    used = [p for p in ((draft.passages if draft is not None else []) or [])
            if isinstance(p, dict)]
    ids = [p["id"] for p in used if p.get("id") is not None]
    texts = dict(session.execute(select(KBPassage.id, KBPassage.text)
                                 .where(KBPassage.id.in_(ids))).all()) if ids else {}
    passages = [{**p, "text": texts.get(p["id"])} if p.get("id") is not None else dict(p)
                for p in used]
    draft_event = latest.get("draft")
    draft_details = draft_event.details if draft_event is not None else {}
    route_event = latest.get("route")
    thread: list[Message] = []
    if inbound is not None:
        earlier = [m for m in (*inbound.references, inbound.in_reply_to) if m]
        if earlier:
            thread = list(session.scalars(
                select(Message).where(Message.mailbox_id == message.mailbox_id,
                                      Message.message_id.in_(earlier), Message.id != message.id)
                .order_by(Message.fetched_at)))
    models = [{"stage": e.stage, "model": e.model, "version": e.model_version,
               "latency_ms": e.latency_ms}
              for e in latest.values() if e.model]
    classify = latest.get("classify")
    return MessageView(
        message=message, mailbox=mailbox, inbound=inbound, segments=segments, thread=thread,
        classification=(classify.details if classify is not None else {}) or {},
        fields=fields, missing=list(extract_details.get("missing") or []),
        rejected=list(extract_details.get("rejected") or []), passages=passages,
        route=(route_event.details if route_event is not None else {}) or {},
        safety={"checks": draft_details.get("safety") or {},
                "gates": (draft.gates if draft is not None else {}) or {},
                "review_reasons": (draft.review_reasons if draft is not None else []) or []},
        models=models, draft=draft,
        claim=session.get(ReviewClaim, message.id),
        labels=list(session.scalars(select(HumanLabel).where(
            HumanLabel.message_pk == message.id).order_by(HumanLabel.id))),
        outcomes=list(session.scalars(select(DraftOutcome).where(
            DraftOutcome.message_pk == message.id).order_by(DraftOutcome.id))),
        send=session.scalar(select(OutboxEntry).where(
            OutboxEntry.key == f"send:{message.id}")),
        history=events, draft_details=draft_details or {},
    )


def claim_active(claim: ReviewClaim | None, now: datetime | None = None) -> bool:
    return claim is not None and claim.expires_at > (now or utcnow())
