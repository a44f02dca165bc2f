"""One summary row per message, kept up to date as its events are written.

The managers' views need, for every message, sums over its events (cost, cloud calls and
tokens) and a few values from single events (the classification, the route and its
reasons, the hand-off). Aggregating the whole append-only `events` table for every query
costs seconds once it holds millions of rows; `message_stats` holds the same figures,
updated in the transaction that appends each event (an upsert, so concurrent workers and
the desk add to one row), and the views join it by primary key.

`rebuild_message_stats` computes the table again from `events` (the migration that adds
it does so for existing data; so do bulk loads that write events directly).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailbot.db.reporting import MessageStats

SUMS = ("work_events", "llm_calls", "llm_failures", "llm_tokens_in", "llm_tokens_out")
COST_SUMS = ("cost", "llm_cost")
VALUES = ("text_chars", "intent", "intent_confidence", "priority", "sentiment", "language",
          "out_of_scope_score", "head_version", "classifier_model", "classifier_version",
          "route", "route_reasons", "handoff")


def _float(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _label(details: dict[str, Any], key: str) -> str | None:
    value = details.get(key)
    label = value.get("label") if isinstance(value, dict) else None
    return str(label) if label is not None else None


def event_values(stage: str, outcome: str, details: dict[str, Any], *, model: str | None,
                 model_version: str | None, tokens_in: int | None, tokens_out: int | None,
                 cost: float | None) -> dict[str, Any]:
    """What one event adds to its message's row: sums, and the values its stage decides."""
    llm = stage == "llm"
    row: dict[str, Any] = {
        "work_events": int(stage != "fetch"), "cost": cost,
        "llm_calls": int(llm), "llm_failures": int(llm and outcome != "ok"),
        "llm_tokens_in": (tokens_in or 0) if llm else 0,
        "llm_tokens_out": (tokens_out or 0) if llm else 0,
        "llm_cost": (cost or 0.0) if llm else 0.0,
    }
    if stage == "parse":
        row["text_chars"] = _float(details.get("text_chars"))
    elif stage == "classify":
        found = details.get("intent")
        intent: dict[str, Any] = found if isinstance(found, dict) else {}
        head = details.get("head_version")
        row.update(
            intent=_label(details, "intent"),
            intent_confidence=_float(intent.get("confidence")),
            priority=_label(details, "priority"), sentiment=_label(details, "sentiment"),
            language=details.get("language") if isinstance(details.get("language"), str)
            else None,
            out_of_scope_score=_float(details.get("out_of_scope_score")),
            head_version=str(head) if head is not None else None,
            classifier_model=model, classifier_version=model_version)
    elif stage == "route":
        codes = details.get("codes")
        joined = ",".join(str(c) for c in codes) if isinstance(codes, list) else ""
        row.update(route=outcome, route_reasons=joined[:1000] or None)
    elif stage == "settle":
        handoff = details.get("handoff")
        if handoff is not None:
            row["handoff"] = str(handoff)
    return row


def add_event(session: Session, message_pk: int, values: dict[str, Any]) -> None:
    """Add one event's `event_values` to the message's row (an upsert)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(MessageStats).values(message_pk=message_pk, **values)
    new = statement.excluded
    table = MessageStats.__table__.c
    changes: dict[str, Any] = {name: table[name] + new[name] for name in SUMS}
    changes["llm_cost"] = table.llm_cost + new.llm_cost
    # NULL + x is NULL: an event without a cost leaves the sum as it was.
    changes["cost"] = func.coalesce(table.cost + new.cost, table.cost, new.cost)
    for name in VALUES:
        if name in values:  # the latest event of the stage decides
            changes[name] = new[name]
    session.execute(statement.on_conflict_do_update(index_elements=["message_pk"],
                                                    set_=changes))


def _json(dialect: str, column: str, *path: str) -> str:
    if dialect == "postgresql":
        return f"({column} #>> '{{{','.join(path)}}}')"
    return f"json_extract({column}, '$.{'.'.join(path)}')"


def rebuild_message_stats(session: Session) -> int:
    """Compute `message_stats` again from `events`; returns the rows written."""
    dialect = session.get_bind().dialect.name
    real = "DOUBLE PRECISION" if dialect == "postgresql" else "REAL"

    def of(stage: str, expr: str) -> str:
        return f"MAX(CASE WHEN e.stage = '{stage}' THEN {expr} END)"

    def num(*path: str) -> str:
        return f"CAST({_json(dialect, 'e.details', *path)} AS {real})"

    if dialect == "postgresql":
        codes = "translate((e.details -> 'codes')::text, '[]\" ', '')"
    else:
        codes = ("replace(replace(replace(json_extract(e.details, '$.codes'), '[', ''), "
                 "']', ''), '\"', '')")
    session.execute(text("DELETE FROM message_stats"))
    result = session.execute(text(f"""
INSERT INTO message_stats (message_pk, work_events, cost, llm_calls, llm_failures,
  llm_tokens_in, llm_tokens_out, llm_cost, text_chars, intent, intent_confidence, priority,
  sentiment, language, out_of_scope_score, head_version, classifier_model,
  classifier_version, route, route_reasons, handoff)
SELECT
  e.message_pk,
  SUM(CASE WHEN e.stage <> 'fetch' THEN 1 ELSE 0 END),
  SUM(e.cost),
  SUM(CASE WHEN e.stage = 'llm' THEN 1 ELSE 0 END),
  SUM(CASE WHEN e.stage = 'llm' AND e.outcome <> 'ok' THEN 1 ELSE 0 END),
  COALESCE(SUM(CASE WHEN e.stage = 'llm' THEN e.tokens_in END), 0),
  COALESCE(SUM(CASE WHEN e.stage = 'llm' THEN e.tokens_out END), 0),
  COALESCE(SUM(CASE WHEN e.stage = 'llm' THEN e.cost END), 0.0),
  {of('parse', num('text_chars'))},
  {of('classify', _json(dialect, 'e.details', 'intent', 'label'))},
  {of('classify', num('intent', 'confidence'))},
  {of('classify', _json(dialect, 'e.details', 'priority', 'label'))},
  {of('classify', _json(dialect, 'e.details', 'sentiment', 'label'))},
  {of('classify', _json(dialect, 'e.details', 'language'))},
  {of('classify', num('out_of_scope_score'))},
  {of('classify', _json(dialect, 'e.details', 'head_version'))},
  {of('classify', 'e.model')},
  {of('classify', 'e.model_version')},
  {of('route', 'e.outcome')},
  {of('route', f"NULLIF({codes}, '')")},
  {of('settle', _json(dialect, 'e.details', 'handoff'))}
FROM events e JOIN messages m ON m.id = e.message_pk
GROUP BY e.message_pk
"""))
    return int(getattr(result, "rowcount", 0) or 0)
