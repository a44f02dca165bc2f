"""managers' views: v_messages, v_daily, v_draft_outcomes, v_escalations, v_corrections

The SQL of each view is written here, per dialect (SQLite and PostgreSQL read JSON, dates
and time differences differently), and frozen with this revision: a later change to a
view is a new migration. `cost_prices` holds the prices of `[cost]` (written by the worker
at start and by `mailbot report`), so the views can price the all-cloud estimate.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-02 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("v_corrections", "v_escalations", "v_draft_outcomes", "v_daily", "v_messages")
SENT = "('sent_unchanged', 'sent_edited')"


class _Dialect:
    """The few expressions SQLite and PostgreSQL spell differently."""

    def __init__(self, name: str) -> None:
        self.pg = name == "postgresql"

    def text(self, column: str, *path: str) -> str:
        if self.pg:
            return f"({column} #>> '{{{','.join(path)}}}')"
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def num(self, column: str, *path: str) -> str:
        if self.pg:
            return f"CAST({self.text(column, *path)} AS DOUBLE PRECISION)"
        return f"CAST({self.text(column, *path)} AS REAL)"

    def seconds(self, later: str, earlier: str) -> str:
        if self.pg:
            return f"CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) AS DOUBLE PRECISION)"
        return f"((julianday({later}) - julianday({earlier})) * 86400.0)"

    def day(self, ts: str) -> str:
        """The calendar day (UTC) of a timestamp."""
        if self.pg:
            return f"CAST(timezone('UTC', {ts}) AS DATE)"
        return f"date({ts})"

    def ceil_div(self, a: str, b: str) -> str:
        if self.pg:
            return f"CAST(CEIL(({a}) / ({b})) AS BIGINT)"
        # SQLite has no CEIL without its math extension: truncate, then add one if cut.
        q = f"(({a}) * 1.0 / ({b}))"
        return f"(CAST({q} AS INTEGER) + (CAST({q} AS INTEGER) < {q}))"

    def codes(self, column: str) -> str:
        """The route's reason codes (identifiers: [a-z_]) as one comma-separated string."""
        if self.pg:
            raw = f"translate(({column} -> 'codes')::text, '[]\" ', '')"
        else:
            raw = (f"replace(replace(replace(json_extract({column}, '$.codes'), '[', ''), "
                   f"']', ''), '\"', '')")
        return f"NULLIF({raw}, '')"

    def flag(self, condition: str) -> str:
        return f"(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    def share(self, part: str, whole: str) -> str:
        real = "DOUBLE PRECISION" if self.pg else "REAL"
        return f"(CAST({part} AS {real}) / NULLIF({whole}, 0))"


def join_classify(d: _Dialect, outer: str) -> str:
    """LEFT JOIN `c`: the small model's classification (its latest classify event) of the
    message `outer`, looked up through ix_events_message_pk_stage."""
    columns = classify_columns(d)
    if d.pg:
        return (f"LEFT JOIN LATERAL (SELECT {columns} FROM events e WHERE e.message_pk = {outer} "
                f"AND e.stage = 'classify' ORDER BY e.id DESC LIMIT 1) c ON true")
    return (f"LEFT JOIN (SELECT e.id, {columns} FROM events e) c ON c.id = (SELECT MAX(x.id) "
            f"FROM events x WHERE x.message_pk = {outer} AND x.stage = 'classify')")


def classify_columns(d: _Dialect) -> str:
    return ", ".join([
        f"{d.text('e.details', 'intent', 'label')} AS intent",
        f"{d.num('e.details', 'intent', 'confidence')} AS intent_confidence",
        f"{d.text('e.details', 'priority', 'label')} AS priority",
        f"{d.text('e.details', 'sentiment', 'label')} AS sentiment",
        f"{d.text('e.details', 'language')} AS language",
        f"{d.num('e.details', 'out_of_scope_score')} AS out_of_scope_score",
        f"{d.text('e.details', 'head_version')} AS head_version",
        "e.model AS model", "e.model_version AS model_version"])


def stage_values(d: _Dialect) -> str:
    """What v_messages takes from the parse, classify, route and settle events, in the same
    pass over `events` as the sums. Each of those stages writes one event per message (an
    escalated message is settled twice, the hand-off only the second time), so the largest
    value is the one value."""
    def of(stage: str, expr: str, name: str) -> str:
        return f"MAX(CASE WHEN e.stage = '{stage}' THEN {expr} END) AS {name}"

    return ",\n    ".join([
        of("parse", d.num("e.details", "text_chars"), "text_chars"),
        of("classify", d.text("e.details", "intent", "label"), "intent"),
        of("classify", d.num("e.details", "intent", "confidence"), "intent_confidence"),
        of("classify", d.text("e.details", "priority", "label"), "priority"),
        of("classify", d.text("e.details", "sentiment", "label"), "sentiment"),
        of("classify", d.text("e.details", "language"), "language"),
        of("classify", d.num("e.details", "out_of_scope_score"), "out_of_scope_score"),
        of("classify", "e.model", "classifier_model"),
        of("classify", "e.model_version", "classifier_version"),
        of("route", "e.outcome", "route"),
        of("route", d.codes("e.details"), "route_reasons"),
        of("settle", d.text("e.details", "handoff"), "handoff"),
    ])


def v_messages(d: _Dialect) -> str:
    received = "COALESCE(m.received_at, m.fetched_at)"
    llm_tokens = "ev.llm_calls > 0 AND ev.llm_tokens_in > 0"
    text_chars = "COALESCE(ev.text_chars, m.size)"
    cloud_in = (f"(CASE WHEN {llm_tokens} THEN ev.llm_tokens_in ELSE pr.prompt_overhead_tokens "
                f"+ {d.ceil_div(text_chars, 'pr.chars_per_token')} END)")
    cloud_out = f"(CASE WHEN {llm_tokens} THEN ev.llm_tokens_out ELSE pr.typical_output_tokens END)"
    handled = "m.status NOT IN ('fetched', 'skipped') AND COALESCE(ev.work_events, 0) > 0"
    return f"""
SELECT
  m.id AS message_pk,
  a.name AS account,
  mb.name AS mailbox,
  m.mailbox_id AS mailbox_id,
  {received} AS received_at,
  {d.day(received)} AS day,
  m.fetched_at AS fetched_at,
  m.status AS status,
  ev.intent AS intent,
  ev.intent_confidence AS intent_confidence,
  ev.priority AS priority,
  ev.sentiment AS sentiment,
  ev.language AS language,
  ev.out_of_scope_score AS out_of_scope_score,
  ev.classifier_model AS classifier_model,
  ev.classifier_version AS classifier_version,
  hl.value AS corrected_intent,
  ev.route AS route,
  ev.route_reasons AS route_reasons,
  ev.handoff AS handoff,
  d.id AS draft_id,
  d.template AS draft_template,
  d.model AS draft_model,
  d.model_version AS draft_model_version,
  d.needs_review AS draft_needs_review,
  o.outcome AS outcome,
  o.reason AS outcome_reason,
  o.edit_distance AS edit_distance,
  o.agent AS agent,
  o.source AS outcome_source,
  {d.seconds('d.created_at', received)} AS time_to_draft_s,
  {d.seconds('fs.first_sent_at', received)} AS time_to_first_send_s,
  {d.flag(handled)} AS handled,
  {d.flag('COALESCE(ev.llm_calls, 0) > 0')} AS escalated,
  COALESCE(ev.cost, 0.0) AS cost,
  COALESCE(ev.llm_calls, 0) AS llm_calls,
  COALESCE(ev.llm_failures, 0) AS llm_failures,
  COALESCE(ev.llm_tokens_in, 0) AS llm_tokens_in,
  COALESCE(ev.llm_tokens_out, 0) AS llm_tokens_out,
  COALESCE(ev.llm_cost, 0.0) AS llm_cost,
  CASE WHEN {handled} THEN {cloud_in} END AS all_cloud_tokens_in,
  CASE WHEN {handled} THEN {cloud_out} END AS all_cloud_tokens_out,
  CASE WHEN {handled} THEN ({cloud_in} * pr.llm_input_per_million
                           + {cloud_out} * pr.llm_output_per_million) / 1000000.0
  END AS all_cloud_cost,
  pr.currency AS currency
FROM messages m
JOIN mailboxes mb ON mb.id = m.mailbox_id
JOIN accounts a ON a.id = mb.account_id
LEFT JOIN (
  SELECT
    e.message_pk,
    SUM(CASE WHEN e.stage <> 'fetch' THEN 1 ELSE 0 END) AS work_events,
    SUM(e.cost) AS cost,
    SUM(CASE WHEN e.stage = 'llm' THEN 1 ELSE 0 END) AS llm_calls,
    SUM(CASE WHEN e.stage = 'llm' AND e.outcome <> 'ok' THEN 1 ELSE 0 END) AS llm_failures,
    COALESCE(SUM(CASE WHEN e.stage = 'llm' THEN e.tokens_in END), 0) AS llm_tokens_in,
    COALESCE(SUM(CASE WHEN e.stage = 'llm' THEN e.tokens_out END), 0) AS llm_tokens_out,
    COALESCE(SUM(CASE WHEN e.stage = 'llm' THEN e.cost END), 0.0) AS llm_cost,
    {stage_values(d)}
  FROM events e
  WHERE e.message_pk IS NOT NULL
  GROUP BY e.message_pk
) ev ON ev.message_pk = m.id
LEFT JOIN drafts d ON d.message_pk = m.id
LEFT JOIN (SELECT message_pk, MAX(id) AS outcome_id FROM draft_outcomes GROUP BY message_pk) lo
  ON lo.message_pk = m.id
LEFT JOIN draft_outcomes o ON o.id = lo.outcome_id
LEFT JOIN (SELECT message_pk, MIN(created_at) AS first_sent_at FROM draft_outcomes
           WHERE outcome IN {SENT} GROUP BY message_pk) fs ON fs.message_pk = m.id
LEFT JOIN (SELECT message_pk, MAX(id) AS label_id FROM human_labels WHERE kind = 'intent'
           GROUP BY message_pk) lh ON lh.message_pk = m.id
LEFT JOIN human_labels hl ON hl.id = lh.label_id
LEFT JOIN cost_prices pr ON pr.id = 1
"""


def v_daily(d: _Dialect) -> str:
    drafted_small = "v.draft_id IS NOT NULL AND v.route = 'slm'"
    drafted_cloud = "v.draft_id IS NOT NULL AND v.route = 'llm'"
    to_person = "v.route = 'human' OR v.handoff IS NOT NULL"
    return f"""
SELECT
  v.day AS day,
  v.account AS account,
  v.mailbox AS mailbox,
  v.mailbox_id AS mailbox_id,
  COUNT(*) AS messages,
  SUM(v.handled) AS handled,
  SUM({d.flag(drafted_small)}) AS drafted_small_model,
  SUM({d.flag(drafted_cloud)}) AS drafted_cloud,
  SUM(v.escalated) AS escalated,
  SUM({d.flag(to_person)}) AS handed_to_person,
  SUM({d.flag("v.status = 'skipped'")}) AS skipped,
  SUM({d.flag("v.status IN ('failed', 'quarantined')")}) AS failed,
  {d.share(f"SUM({d.flag(drafted_small)})", "SUM(v.handled)")} AS small_model_share,
  {d.share("SUM(v.escalated)", "SUM(v.handled)")} AS escalated_share,
  {d.share(f"SUM({d.flag(to_person)})", "SUM(v.handled)")} AS handed_to_person_share,
  SUM(v.cost) AS spent,
  SUM(v.llm_cost) AS spent_cloud,
  SUM(v.all_cloud_cost) AS all_cloud_estimate,
  MAX(v.currency) AS currency
FROM v_messages v
GROUP BY v.day, v.account, v.mailbox, v.mailbox_id
"""


def v_draft_outcomes(d: _Dialect) -> str:
    return f"""
SELECT
  o.id AS outcome_id,
  o.message_pk AS message_pk,
  o.draft_id AS draft_id,
  a.name AS account,
  mb.name AS mailbox,
  m.mailbox_id AS mailbox_id,
  o.created_at AS decided_at,
  {d.day('o.created_at')} AS day,
  o.outcome AS outcome,
  o.reason AS reject_reason,
  o.edit_distance AS edit_distance,
  {d.flag("o.outcome = 'sent_unchanged'")} AS sent_unchanged,
  {d.flag("o.outcome = 'sent_edited'")} AS sent_edited,
  {d.flag("o.outcome = 'rejected'")} AS rejected,
  {d.flag("o.outcome = 'discarded'")} AS discarded,
  {d.flag("o.outcome = 'handled_elsewhere'")} AS handled_elsewhere,
  c.intent AS intent,
  COALESCE(o.language, dr.language) AS language,
  COALESCE(o.template, dr.template) AS template,
  COALESCE(o.model, dr.model) AS model,
  COALESCE(o.model_version, dr.model_version) AS model_version,
  o.source AS source,
  o.agent AS agent,
  {d.seconds('o.created_at', 'dr.created_at')} AS review_s
FROM draft_outcomes o
JOIN messages m ON m.id = o.message_pk
JOIN mailboxes mb ON mb.id = m.mailbox_id
JOIN accounts a ON a.id = mb.account_id
LEFT JOIN drafts dr ON dr.id = o.draft_id
{join_classify(d, 'o.message_pk')}
"""


def v_escalations(d: _Dialect) -> str:
    if d.pg:
        reasons = """
  SELECT r.message_pk, r.created_at, 0 AS kind_order, j.n - 1 AS reason_index,
         j.value ->> 'code' AS reason, j.value ->> 'action' AS action, 'route' AS source
  FROM events r
  CROSS JOIN LATERAL jsonb_array_elements(
      CASE WHEN jsonb_typeof(r.details -> 'reasons') = 'array'
           THEN r.details -> 'reasons' ELSE '[]'::jsonb END) WITH ORDINALITY AS j(value, n)
  WHERE r.stage = 'route' AND r.outcome IN ('llm', 'human') AND r.message_pk IS NOT NULL
    AND j.value ->> 'action' IN ('llm', 'human')"""
    else:
        reasons = """
  SELECT r.message_pk, r.created_at, 0 AS kind_order, CAST(j.key AS INTEGER) AS reason_index,
         json_extract(j.value, '$.code') AS reason, json_extract(j.value, '$.action') AS action,
         'route' AS source
  FROM events r, json_each(r.details, '$.reasons') AS j
  WHERE r.stage = 'route' AND r.outcome IN ('llm', 'human') AND r.message_pk IS NOT NULL
    AND json_extract(j.value, '$.action') IN ('llm', 'human')"""
    handoffs = f"""
  SELECT s.message_pk, s.created_at, 1 AS kind_order, 0 AS reason_index,
         {d.text('s.details', 'handoff')} AS reason, 'human' AS action, 'handoff' AS source
  FROM events s
  WHERE s.stage = 'settle' AND s.outcome = 'needs_human' AND s.message_pk IS NOT NULL
    AND {d.text('s.details', 'handoff')} IS NOT NULL"""
    return f"""
SELECT
  x.message_pk AS message_pk,
  a.name AS account,
  mb.name AS mailbox,
  m.mailbox_id AS mailbox_id,
  x.created_at AS decided_at,
  {d.day('x.created_at')} AS day,
  x.reason AS reason,
  x.action AS action,
  x.source AS source,
  x.reason_index AS reason_index,
  CASE WHEN ROW_NUMBER() OVER (PARTITION BY x.message_pk
                               ORDER BY x.kind_order, x.reason_index, x.created_at) = 1
       THEN 1 ELSE 0 END AS first_reason,
  m.status AS status,
  c.intent AS intent,
  c.language AS language,
  COALESCE(l.llm_calls, 0) AS llm_calls,
  COALESCE(l.llm_failures, 0) AS llm_failures,
  COALESCE(l.llm_tokens_in, 0) AS llm_tokens_in,
  COALESCE(l.llm_tokens_out, 0) AS llm_tokens_out,
  COALESCE(l.llm_cost, 0.0) AS llm_cost,
  COALESCE(q.requests, 0) AS llm_requests,
  COALESCE(q.requests_failed, 0) AS llm_requests_failed
FROM ({reasons}
  UNION ALL{handoffs}
) x
JOIN messages m ON m.id = x.message_pk
JOIN mailboxes mb ON mb.id = m.mailbox_id
JOIN accounts a ON a.id = mb.account_id
{join_classify(d, 'x.message_pk')}
LEFT JOIN (
  SELECT e.message_pk,
         COUNT(*) AS llm_calls,
         SUM(CASE WHEN e.outcome <> 'ok' THEN 1 ELSE 0 END) AS llm_failures,
         COALESCE(SUM(e.tokens_in), 0) AS llm_tokens_in,
         COALESCE(SUM(e.tokens_out), 0) AS llm_tokens_out,
         COALESCE(SUM(e.cost), 0.0) AS llm_cost
  FROM events e WHERE e.stage = 'llm' AND e.message_pk IS NOT NULL
  GROUP BY e.message_pk
) l ON l.message_pk = x.message_pk
LEFT JOIN (
  SELECT message_pk, COUNT(*) AS requests,
         SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS requests_failed
  FROM llm_requests GROUP BY message_pk
) q ON q.message_pk = x.message_pk
"""


def v_corrections(d: _Dialect) -> str:
    # A field's value is personal data: only whether it was changed is shown.
    return f"""
SELECT
  h.id AS label_id,
  h.message_pk AS message_pk,
  a.name AS account,
  mb.name AS mailbox,
  m.mailbox_id AS mailbox_id,
  h.created_at AS corrected_at,
  {d.day('h.created_at')} AS day,
  h.kind AS kind,
  h.name AS field,
  CASE WHEN h.kind = 'field' THEN NULL ELSE h.previous END AS from_value,
  CASE WHEN h.kind = 'field' THEN NULL ELSE h.value END AS to_value,
  CASE WHEN h.previous IS NULL OR h.value IS NULL THEN NULL
       WHEN h.previous = h.value THEN 0 ELSE 1 END AS changed,
  h.source AS source,
  h.agent AS agent,
  c.model AS classifier_model,
  c.model_version AS classifier_version,
  c.head_version AS head_version
FROM human_labels h
JOIN messages m ON m.id = h.message_pk
JOIN mailboxes mb ON mb.id = m.mailbox_id
JOIN accounts a ON a.id = mb.account_id
{join_classify(d, 'h.message_pk')}
"""


BUILDERS = {"v_messages": v_messages, "v_daily": v_daily, "v_draft_outcomes": v_draft_outcomes,
            "v_escalations": v_escalations, "v_corrections": v_corrections}


def upgrade() -> None:
    op.create_table(
        "cost_prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("llm_input_per_million", sa.Float(), nullable=False),
        sa.Column("llm_output_per_million", sa.Float(), nullable=False),
        sa.Column("chars_per_token", sa.Float(), nullable=False),
        sa.Column("prompt_overhead_tokens", sa.Integer(), nullable=False),
        sa.Column("typical_output_tokens", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_prices")),
    )
    # The views read events per message and per stage; PostgreSQL answers the per-message
    # sums from the index alone.
    op.create_index("ix_events_message_pk_stage", "events", ["message_pk", "stage"],
                    postgresql_include=["outcome", "cost", "tokens_in", "tokens_out"])
    op.create_index("ix_events_stage_outcome", "events", ["stage", "outcome"])
    dialect = _Dialect(op.get_bind().dialect.name)
    # The day a message arrived: reports filter and group on it (and PostgreSQL learns from
    # the index how many days there are, so it groups by hashing instead of sorting).
    received = "COALESCE(received_at, fetched_at)"
    op.execute(f"CREATE INDEX ix_messages_day ON messages ({dialect.day(received)}, mailbox_id)")
    for name in reversed(VIEWS):  # v_messages first: v_daily reads it
        op.execute(f"CREATE VIEW {name} AS {BUILDERS[name](dialect)}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index("ix_messages_day", table_name="messages")
    op.drop_index("ix_events_stage_outcome", table_name="events")
    op.drop_index("ix_events_message_pk_stage", table_name="events")
    op.drop_table("cost_prices")
