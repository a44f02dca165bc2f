"""The managers' reports: the figures of the SQL views (docs/sql.md), grouped and windowed.

Every report reads the views, never the tables, so `mailbot report ...` and a manager's own
SQL give the same numbers. Days are UTC calendar days (the views' `day` column); `since` is
the first day counted, `until` the day to stop before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

from mailbot.config import CostSettings
from mailbot.db.base import utcnow
from mailbot.db.reporting import CostPrices

VIEWS = ("v_messages", "v_daily", "v_draft_outcomes", "v_escalations", "v_corrections")
GROUPINGS = ("day", "week", "intent", "language", "mailbox")
REPORTS = ("volume", "automation", "escalations", "drafts", "latency", "cost")
Grouping = Literal["day", "week", "intent", "language", "mailbox"]


class ReportError(ValueError):
    """A report was asked for something it cannot show (the message says what instead)."""


def store_prices(session: Session, settings: CostSettings) -> bool:
    """Write `[cost]`'s prices into `cost_prices` for the views; True when they changed."""
    wanted = {
        "currency": settings.currency,
        "llm_input_per_million": settings.llm_input_per_million,
        "llm_output_per_million": settings.llm_output_per_million,
        "chars_per_token": settings.chars_per_token,
        "prompt_overhead_tokens": settings.prompt_overhead_tokens,
        "typical_output_tokens": settings.typical_output_tokens,
    }
    row = session.get(CostPrices, 1)
    if row is None:
        session.add(CostPrices(id=1, updated_at=utcnow(), **wanted))
        return True
    if all(getattr(row, k) == v for k, v in wanted.items()):
        return False
    for key, value in wanted.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    return True


@dataclass(frozen=True, slots=True)
class Report:
    """One report: its rows (one per group, or group and reason), in column order."""

    name: str
    by: str
    since: date | None
    until: date | None
    columns: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"report": self.name, "by": self.by,
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "columns": list(self.columns), "rows": self.rows}


# --- grouping and windows -----------------------------------------------------------------


def _group_sql(by: str, dialect: str, alias: str = "v") -> str:
    if by == "day":
        return f"{alias}.day"
    if by == "week":  # the Monday the week starts on
        if dialect == "postgresql":
            return f"CAST(date_trunc('week', {alias}.day) AS DATE)"
        return f"date({alias}.day, '-' || ((CAST(strftime('%w', {alias}.day) AS INTEGER) + 6) % 7) || ' days')"  # noqa: E501
    if by == "mailbox":
        return f"{alias}.account || '/' || {alias}.mailbox"
    if by in ("intent", "language"):
        return f"{alias}.{by}"
    raise ReportError(f"--by {by!r}: expected one of {', '.join(GROUPINGS)}")


@dataclass(frozen=True, slots=True)
class Window:
    """Which mail a report counts: the days [since, until) and, optionally, one mailbox."""

    since: date | None = None
    until: date | None = None
    mailbox_id: int | None = None


def _window(window: Window, dialect: str, alias: str = "v") -> tuple[str, dict[str, Any]]:
    since, until = window.since, window.until
    clauses: list[str] = []
    params: dict[str, Any] = {}
    cast = "CAST(:{0} AS DATE)" if dialect == "postgresql" else ":{0}"
    if since is not None:
        clauses.append(f"{alias}.day >= {cast.format('since')}")
        params["since"] = since.isoformat()
    if until is not None:
        clauses.append(f"{alias}.day < {cast.format('until')}")
        params["until"] = until.isoformat()
    if window.mailbox_id is not None:
        clauses.append(f"{alias}.mailbox_id = :mailbox_id")
        params["mailbox_id"] = window.mailbox_id
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _key(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    return value


def _ratio(part: float | int | None, whole: float | int | None) -> float | None:
    if not whole:
        return None
    return round(float(part or 0) / float(whole), 6)


def _round(value: Any, digits: int = 9) -> Any:
    return round(float(value), digits) if value is not None else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation, as PostgreSQL's percentile_cont."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _rows(session: Session, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in session.execute(text(sql), params)]


# --- the reports ----------------------------------------------------------------------------


def _grouped(session: Session, view: str, sums: Sequence[tuple[str, str]], by: str,
             window: Window, extra_group: Sequence[str] = ()) -> list[dict[str, Any]]:
    dialect = session.get_bind().dialect.name
    group = _group_sql(by, dialect)
    where, params = _window(window, dialect)
    select = ", ".join(f"{expr} AS {name}" for name, expr in sums)
    extra = "".join(f", v.{c}" for c in extra_group)
    sql = (f"SELECT {group} AS grp{extra}, {select} FROM {view} v{where} "
           f"GROUP BY {group}{extra} ORDER BY 1{''.join(f', {i + 2}' for i in range(len(extra_group)))}")  # noqa: E501
    rows = _rows(session, sql, params)
    for row in rows:
        row[by] = _key(row.pop("grp"))
    return rows


def _volume(session: Session, by: str, window: Window) -> Report:
    sums = [
        ("messages", "COUNT(*)"),
        ("handled", "SUM(v.handled)"),
        ("skipped", "SUM(CASE WHEN v.status = 'skipped' THEN 1 ELSE 0 END)"),
        ("failed", "SUM(CASE WHEN v.status IN ('failed', 'quarantined') THEN 1 ELSE 0 END)"),
        ("drafted", "SUM(CASE WHEN v.draft_id IS NOT NULL THEN 1 ELSE 0 END)"),
        ("escalated", "SUM(v.escalated)"),
        ("handed_to_person",
         "SUM(CASE WHEN v.route = 'human' OR v.handoff IS NOT NULL THEN 1 ELSE 0 END)"),
    ]
    rows = _grouped(session, "v_messages", sums, by, window)
    columns = (by, *[name for name, _ in sums])
    return Report("volume", by, window.since, window.until, columns,
                  [{c: _int(r[c]) if c != by else r[c] for c in columns} for r in rows])


def _int(value: Any) -> int:
    return int(value or 0)


def _automation(session: Session, by: str, window: Window) -> Report:
    sums = [
        ("handled", "SUM(v.handled)"),
        ("drafted_small_model",
         "SUM(CASE WHEN v.draft_id IS NOT NULL AND v.route = 'slm' THEN 1 ELSE 0 END)"),
        ("drafted_cloud",
         "SUM(CASE WHEN v.draft_id IS NOT NULL AND v.route = 'llm' THEN 1 ELSE 0 END)"),
        ("escalated", "SUM(v.escalated)"),
        ("handed_to_person",
         "SUM(CASE WHEN v.route = 'human' OR v.handoff IS NOT NULL THEN 1 ELSE 0 END)"),
        ("sent_unchanged", "SUM(CASE WHEN v.outcome = 'sent_unchanged' THEN 1 ELSE 0 END)"),
    ]
    rows = _grouped(session, "v_messages", sums, by, window)
    out = []
    for r in rows:
        counts = {name: _int(r[name]) for name, _ in sums}
        handled = counts["handled"]
        out.append({by: r[by], **counts,
                    "small_model_share": _ratio(counts["drafted_small_model"], handled),
                    "automation_share": _ratio(counts["drafted_small_model"]
                                               + counts["drafted_cloud"], handled),
                    "escalated_share": _ratio(counts["escalated"], handled),
                    "handed_to_person_share": _ratio(counts["handed_to_person"], handled)})
    columns = (by, *[n for n, _ in sums], "small_model_share", "automation_share",
               "escalated_share", "handed_to_person_share")
    return Report("automation", by, window.since, window.until, columns, out)


def _escalations(session: Session, by: str, window: Window) -> Report:
    sums = [
        ("messages", "COUNT(DISTINCT v.message_pk)"),
        ("llm_calls", "SUM(v.llm_calls)"),
        ("llm_failures", "SUM(v.llm_failures)"),
        ("llm_tokens_in", "SUM(v.llm_tokens_in)"),
        ("llm_tokens_out", "SUM(v.llm_tokens_out)"),
        ("llm_cost", "SUM(v.llm_cost)"),
    ]
    rows = _grouped(session, "v_escalations", sums, by, window,
                    extra_group=("reason", "action"))
    columns = (by, "reason", "action", *[n for n, _ in sums])
    out = [{by: r[by], "reason": r["reason"], "action": r["action"],
            **{n: (_round(r[n]) if n == "llm_cost" else _int(r[n])) for n, _ in sums}}
           for r in rows]
    return Report("escalations", by, window.since, window.until, columns, out)


_REJECT_REASONS = ("wrong_intent", "wrong_facts", "wrong_tone", "should_not_answer", "other")


def _drafts(session: Session, by: str, window: Window) -> Report:
    dialect = session.get_bind().dialect.name
    group = _group_sql(by, dialect)
    where, params = _window(window, dialect)
    sql = (f"SELECT {group} AS grp, v.outcome, v.reject_reason, v.edit_distance "
           f"FROM v_draft_outcomes v{where}")
    groups: dict[Any, dict[str, Any]] = {}
    distances: dict[Any, list[float]] = {}
    for grp, outcome, reason, distance in session.execute(text(sql), params):
        key = _key(grp)
        row = groups.setdefault(key, {by: key, "outcomes": 0, "sent_unchanged": 0,
                                      "sent_edited": 0, "rejected": 0, "discarded": 0,
                                      "handled_elsewhere": 0,
                                      **{f"rejected_{r}": 0 for r in _REJECT_REASONS}})
        row["outcomes"] += 1
        if outcome in row:
            row[outcome] += 1
        if outcome == "rejected":
            row[f"rejected_{reason if reason in _REJECT_REASONS else 'other'}"] += 1
        if outcome == "sent_edited" and distance is not None:
            distances.setdefault(key, []).append(float(distance))
    out = []
    for key in sorted(groups, key=lambda k: (k is None, k)):
        row = groups[key]
        edits = distances.get(key, [])
        decided = row["sent_unchanged"] + row["sent_edited"] + row["rejected"]
        out.append({**row,
                    "unchanged_share": _ratio(row["sent_unchanged"], decided),
                    "edited_share": _ratio(row["sent_edited"], decided),
                    "rejected_share": _ratio(row["rejected"], decided),
                    "mean_edit_distance": _round(sum(edits) / len(edits)) if edits else None,
                    "median_edit_distance": _round(percentile(edits, 50))})
    columns = (by, "outcomes", "sent_unchanged", "sent_edited", "rejected", "discarded",
               "handled_elsewhere", *[f"rejected_{r}" for r in _REJECT_REASONS],
               "unchanged_share", "edited_share", "rejected_share", "mean_edit_distance",
               "median_edit_distance")
    return Report("drafts", by, window.since, window.until, columns, out)


def _latency(session: Session, by: str, window: Window) -> Report:
    dialect = session.get_bind().dialect.name
    group = _group_sql(by, dialect)
    where, params = _window(window, dialect)
    sql = (f"SELECT {group} AS grp, v.time_to_draft_s, v.time_to_first_send_s "
           f"FROM v_messages v{where}")
    drafts: dict[Any, list[float]] = {}
    sends: dict[Any, list[float]] = {}
    keys: set[Any] = set()
    for grp, to_draft, to_send in session.execute(text(sql), params):
        key = _key(grp)
        keys.add(key)
        if to_draft is not None:
            drafts.setdefault(key, []).append(float(to_draft))
        if to_send is not None:
            sends.setdefault(key, []).append(float(to_send))
    out = []
    for key in sorted(keys, key=lambda k: (k is None, k)):
        d, s = drafts.get(key, []), sends.get(key, [])
        out.append({by: key, "drafted": len(d),
                    "median_time_to_draft_s": _round(percentile(d, 50), 3),
                    "p90_time_to_draft_s": _round(percentile(d, 90), 3),
                    "answered": len(s),
                    "median_first_response_s": _round(percentile(s, 50), 3),
                    "p90_first_response_s": _round(percentile(s, 90), 3)})
    columns = (by, "drafted", "median_time_to_draft_s", "p90_time_to_draft_s", "answered",
               "median_first_response_s", "p90_first_response_s")
    return Report("latency", by, window.since, window.until, columns, out)


def _cost(session: Session, by: str, window: Window) -> Report:
    sums = [
        ("handled", "SUM(v.handled)"),
        ("escalated", "SUM(v.escalated)"),
        ("spent", "SUM(v.cost)"),
        ("spent_cloud", "SUM(v.llm_cost)"),
        ("all_cloud_estimate", "SUM(v.all_cloud_cost)"),
    ]
    rows = _grouped(session, "v_messages", sums, by, window)
    out = []
    for r in rows:
        handled, spent = _int(r["handled"]), float(r["spent"] or 0)
        estimate = r["all_cloud_estimate"]
        out.append({by: r[by], "handled": handled, "escalated": _int(r["escalated"]),
                    "spent": _round(spent), "spent_cloud": _round(r["spent_cloud"] or 0),
                    "all_cloud_estimate": _round(estimate),
                    "saving_share": (_round(1.0 - spent / float(estimate))
                                     if estimate else None),
                    "cost_per_email": _round(spent / handled) if handled else None})
    columns = (by, "handled", "escalated", "spent", "spent_cloud", "all_cloud_estimate",
               "saving_share", "cost_per_email")
    return Report("cost", by, window.since, window.until, columns, out)


_BUILDERS: dict[str, Callable[[Session, str, Window], Report]] = {
    "volume": _volume, "automation": _automation, "escalations": _escalations,
    "drafts": _drafts, "latency": _latency, "cost": _cost,
}


def example_queries(markdown: str, dialect: str) -> list[tuple[str, str]]:
    """The numbered example queries of docs/sql.md: (title, SQL) for `dialect`.

    Each is a `### N. title` heading followed by one ```sql block that runs on both
    databases, or two: the SQLite one first, then the PostgreSQL one.
    """
    found = []
    for section in re.split(r"^### ", markdown, flags=re.M)[1:]:
        title, _, body = section.partition("\n")
        if not re.match(r"\d+\.", title):
            continue
        blocks = re.findall(r"```sql\n(.*?)```", body, re.S)
        if not blocks:
            continue
        sql = blocks[1] if dialect == "postgresql" and len(blocks) > 1 else blocks[0]
        found.append((title.strip(), sql.strip().rstrip(";")))
    return found


def to_csv(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV with a header line, as `mailbot report --csv` prints them."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # Group names come from the data (mailbox names): keep a spreadsheet from reading
        # one as a formula.
        writer.writerow({k: (f"'{v}" if isinstance(v, str) and v[:1] in "=+-@\t\r" else v)
                         for k, v in row.items() if k in columns})
    return out.getvalue()


def find_mailbox(session: Session, name: str) -> int:
    """The id of the mailbox "account/folder" (ReportError when there is none)."""
    from sqlalchemy import select

    from mailbot.db.models import Account, Mailbox

    account, _, folder = name.partition("/")
    found = session.scalar(select(Mailbox.id).join(Account, Account.id == Mailbox.account_id)
                           .where(Account.name == account, Mailbox.name == folder))
    if found is None:
        known = [f"{a}/{m}" for a, m in session.execute(
            select(Account.name, Mailbox.name).join(Account, Account.id == Mailbox.account_id)
            .order_by(Account.name, Mailbox.name))]
        raise ReportError(f"--mailbox {name!r}: no such mailbox (known: "
                          f"{', '.join(known) or 'none yet'})")
    return int(found)


def build_report(session: Session, name: str, *, by: str = "day", since: date | None = None,
                 until: date | None = None, mailbox_id: int | None = None) -> Report:
    """The report `name` (one of REPORTS) grouped `by` over the days [since, until), of
    every mailbox or of `mailbox_id` only."""
    if name not in _BUILDERS:
        raise ReportError(f"unknown report {name!r}: expected one of {', '.join(REPORTS)}")
    if by not in GROUPINGS:
        raise ReportError(f"--by {by!r}: expected one of {', '.join(GROUPINGS)}")
    if since and until and until <= since:
        raise ReportError("--until must be a later day than --since")
    return _BUILDERS[name](session, by, Window(since, until, mailbox_id))
