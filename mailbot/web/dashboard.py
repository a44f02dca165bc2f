"""The managers' dashboard (`/dashboard`): the figures of `mailbot report` as charts.

Every figure comes from `mailbot.audit.reports.build_report` (which reads the SQL views), so
the page, its CSV downloads and `mailbot report ... --csv` agree; nothing here counts rows
itself. Head versions come from `artifacts`, as `mailbot model history` shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Flask, Response, abort, g, render_template, request
from sqlalchemy.orm import Session

from mailbot.audit.reports import Report, build_report, store_prices, to_csv
from mailbot.config import Config
from mailbot.db.session import Database
from mailbot.db.web import Role
from mailbot.web import auth
from mailbot.web.charts import Chart, Series, bar_list, column_chart, count, decimal, share
from mailbot.web.queue import visible_mailboxes

log = logging.getLogger(__name__)

CHARTS = ("volume", "automation", "escalations", "drafts", "edits", "cost", "models")
HEADS = ("intent", "priority", "sentiment")
DEFAULT_DAYS = 30
WEEKLY_AFTER_DAYS = 92  # longer ranges are drawn (and downloaded) one column per week
REJECT_REASONS = ("wrong_intent", "wrong_facts", "wrong_tone", "should_not_answer", "other")
MODEL_COLUMNS = ("head", "version", "created_at", "source", "examples", "cv_accuracy",
                 "holdout_accuracy", "escalated", "versions_recorded")


@dataclass(frozen=True, slots=True)
class DashboardFilter:
    """The range and mailbox a manager asked for; `error` says what was wrong with it."""

    since: date | None
    until: date | None
    mailbox_id: int | None = None
    error: str = ""

    @classmethod
    def from_args(cls, args: Mapping[str, str], today: date,
                  mailboxes: Sequence[tuple[int, str]]) -> DashboardFilter:
        """From the form: a missing day means the last DEFAULT_DAYS days, an empty one no
        bound; `until` is the day to stop before, as in `mailbot report`."""
        errors: list[str] = []

        def day(key: str, default: date) -> date | None:
            if key not in args:
                return default
            value = args.get(key, "").strip()
            if not value:
                return None
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                errors.append(f"{key}: {value[:40]!r} is not a day (YYYY-MM-DD)")
                return default

        since = day("since", today - timedelta(days=DEFAULT_DAYS - 1))
        until = day("until", today + timedelta(days=1))
        mailbox_id = None
        wanted = args.get("mailbox", "").strip()
        if wanted:
            ids = {str(mid): mid for mid, _ in mailboxes}
            if wanted in ids:
                mailbox_id = ids[wanted]
            else:
                errors.append("mailbox: no such mailbox")
        if since and until and until <= since:
            errors.append("until must be a later day than since")
        return cls(since, until, mailbox_id, "; ".join(errors))

    def query(self) -> dict[str, str]:
        """The filter as query arguments, for the CSV links."""
        found = {"since": self.since.isoformat() if self.since else "",
                 "until": self.until.isoformat() if self.until else ""}
        if self.mailbox_id is not None:
            found["mailbox"] = str(self.mailbox_id)
        return found


@dataclass(frozen=True, slots=True)
class Figures:
    """The reports behind every chart, for one filter, grouped by day or by week."""

    by: str
    volume: Report
    automation: Report
    escalations: Report
    drafts: Report
    cost: Report
    categories: tuple[str, ...]
    models: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Tile:
    """One headline figure."""

    label: str
    value: str
    detail: str = ""


# The reports each CSV download needs (the page needs them all).
NEEDS = {"volume": ("volume",), "automation": ("volume", "automation"),
         "escalations": ("escalations",), "drafts": ("drafts",), "edits": ("drafts",),
         "cost": ("cost",), "models": ()}
ALL_REPORTS = ("volume", "automation", "escalations", "drafts", "cost")


def collect(session: Session, filt: DashboardFilter, models: tuple[dict[str, Any], ...] = (),
            needed: Sequence[str] = ALL_REPORTS) -> Figures:
    """Run the reports the dashboard shows, by day (or by week over a long range); those
    not `needed` are left empty."""
    def report(name: str, by: str) -> Report:
        if name not in needed:
            return Report(name, by, filt.since, filt.until, ())
        return build_report(session, name, by=by, since=filt.since, until=filt.until,
                            mailbox_id=filt.mailbox_id)

    by = "day"
    volume = None
    if filt.since and filt.until:
        if (filt.until - filt.since).days > WEEKLY_AFTER_DAYS:
            by = "week"
    else:  # an open range: how long it is depends on the mail that is there
        volume = build_report(session, "volume", by="day", since=filt.since,
                              mailbox_id=filt.mailbox_id, until=filt.until)
        days = [date.fromisoformat(str(r["day"])) for r in volume.rows if r["day"]]
        first = filt.since or min(days, default=None)
        last = filt.until or (max(days) + timedelta(days=1) if days else None)
        if first and last and (last - first).days > WEEKLY_AFTER_DAYS:
            by, volume = "week", None
        elif "volume" not in needed:
            volume = None
    reports = {name: report(name, by) for name in ("automation", "escalations", "drafts",
                                                   "cost")}
    volume = volume or report("volume", by)
    keys = {str(r[by]) for rep in (volume, *reports.values()) for r in rep.rows if r[by]}
    return Figures(by, volume, reports["automation"], reports["escalations"], reports["drafts"],
                   reports["cost"], categories(filt, by, keys), models)


def categories(filt: DashboardFilter, by: str, keys: set[str]) -> tuple[str, ...]:
    """Every day (or Monday) of the range, with the days that had no mail too."""
    days = sorted(date.fromisoformat(k) for k in keys)
    first = filt.since or (days[0] if days else None)
    last = (filt.until - timedelta(days=1)) if filt.until else (days[-1] if days else None)
    if first is None or last is None or last < first:
        return ()
    step = timedelta(days=7 if by == "week" else 1)
    if by == "week":
        first -= timedelta(days=first.weekday())
    found = []
    while first <= last:
        found.append(first.isoformat())
        first += step
    return tuple(found)


def model_rows(config: Config, database: Database) -> tuple[dict[str, Any], ...]:
    """The head versions in service with their metrics (the seed head when none is)."""
    from mailbot.classify.store import HeadStore
    from mailbot.learn.versions import history_row, serving

    store = HeadStore(config.models_path, database)
    rows = []
    for head in HEADS:
        recorded = store.versions(head)
        current = serving(store, head)
        if current is None:
            rows.append({"head": head, "version": "seed", "created_at": "", "source": "seed",
                         "examples": None, "cv_accuracy": None, "holdout_accuracy": None,
                         "escalated": None, "versions_recorded": len(recorded)})
            continue
        row = history_row(current, True)
        rows.append({"head": head, **{k: row[k] for k in MODEL_COLUMNS[1:-1]},
                     "versions_recorded": len(recorded)})
    return tuple(rows)


# --- what each chart shows and downloads ------------------------------------------------------


def _by_key(report: Report, by: str) -> dict[str, dict[str, Any]]:
    return {str(r[by]): r for r in report.rows}


def _values(rows: dict[str, dict[str, Any]], keys: Sequence[str], column: str
            ) -> tuple[float, ...]:
    return tuple(float(rows.get(k, {}).get(column) or 0) for k in keys)


def _sum(report: Report, column: str) -> float:
    return sum(float(r.get(column) or 0) for r in report.rows)


def _tick(by: str) -> Any:
    return (lambda c: f"w/c {c[5:]}") if by == "week" else (lambda c: c[5:])


def table(figures: Figures, chart: str) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The columns and rows of a chart's CSV: the report's own, unchanged."""
    by = figures.by
    if chart == "automation":
        # The automation report's rows (the same days as the volume report's: both count
        # v_messages), with the volume's messages and skipped beside them.
        volume = _by_key(figures.volume, by)
        rows = [{**r, **{c: volume.get(str(r[by]), {}).get(c, 0) for c in ("messages",
                                                                          "skipped")}}
                for r in figures.automation.rows]
        return (*figures.automation.columns, "messages", "skipped"), rows
    if chart == "edits":
        return ((by, "sent_edited", "mean_edit_distance", "median_edit_distance"),
                list(figures.drafts.rows))
    if chart == "models":
        return MODEL_COLUMNS, list(figures.models)
    report: Report = getattr(figures, chart)
    return report.columns, list(report.rows)


def charts(figures: Figures, currency: str) -> tuple[Chart, ...]:
    """The dashboard's charts, in page order."""
    by, keys = figures.by, figures.categories
    per = "week" if by == "week" else "day"
    tick = _tick(by)
    volume = _by_key(figures.volume, by)
    messages = _values(volume, keys, "messages")
    handled = _values(volume, keys, "handled")
    skipped = _values(volume, keys, "skipped")
    waiting = tuple(max(m - h - s, 0.0) for m, h, s in zip(messages, handled, skipped,
                                                           strict=True))
    found: list[Chart] = [column_chart(
        "volume", f"Mail received per {per}",
        f"Emails that arrived each {per}: handled by mailbot, skipped (auto-replies, bounces, "
        "lists), or not handled yet.", keys,
        [Series("handled", "s0", handled), Series("skipped", "s3", skipped),
         Series("not handled yet", "s4", waiting)], tick_text=tick,
        summary=f"{count(sum(messages))} emails, {count(sum(handled))} handled, "
                f"{count(sum(skipped))} skipped.")]

    auto = _by_key(figures.automation, by)
    parts = {name: _values(auto, keys, column) for name, column in (
        ("small model", "drafted_small_model"), ("cloud LLM", "drafted_cloud"),
        ("person", "handed_to_person"))}
    other = tuple(max(m - s - sum(p[i] for p in parts.values()), 0.0)
                  for i, (m, s) in enumerate(zip(messages, skipped, strict=True)))
    shares = [Series(name, css, tuple(v / m if m else None for v, m in zip(
        values, messages, strict=True))) for (name, values), css in zip(
        [*parts.items(), ("skipped", skipped), ("other (failed, waiting)", other)],
        ("s0", "s1", "s2", "s3", "s4"), strict=True)]
    total_handled = _sum(figures.automation, "handled")
    drafted = _sum(figures.automation, "drafted_small_model")
    cloud = _sum(figures.automation, "drafted_cloud")
    found.append(column_chart(
        "automation", "Who handled the mail",
        f"Share of each {per}'s mail drafted by the small model, drafted from the cloud LLM's "
        "answer, given to a person, or skipped.", keys, shares, fmt=share, as_share=True,
        tick_text=tick, summary=(
            f"Of {count(total_handled)} handled emails the small model drafted "
            f"{share(drafted / total_handled)} and the cloud LLM {share(cloud / total_handled)}."
            if total_handled else "")))

    reasons: dict[tuple[str, str], float] = {}
    for r in figures.escalations.rows:
        key = (str(r["reason"]), str(r["action"]))
        reasons[key] = reasons.get(key, 0) + float(r["messages"] or 0)
    items = [(f"{reason} → {'cloud LLM' if action == 'llm' else 'person'}", value,
              "s1" if action == "llm" else "s2")
             for (reason, action), value in sorted(reasons.items(), key=lambda kv: -kv[1])]
    found.append(bar_list(
        "escalations", "Why mail left the small model",
        "Messages per reason they were sent to the cloud LLM or to a person (a message can "
        "have several reasons).", items))

    outcome_names = [("sent unchanged", "sent_unchanged", "s0"),
                     ("sent edited", "sent_edited", "s1"),
                     *[(f"rejected: {r.replace('_', ' ')}", f"rejected_{r}", "s5")
                       for r in REJECT_REASONS],
                     ("discarded", "discarded", "s3"),
                     ("handled elsewhere", "handled_elsewhere", "s4")]
    totals = {column: _sum(figures.drafts, column) for _, column, _ in outcome_names}
    decided = totals["sent_unchanged"] + totals["sent_edited"] + _sum(figures.drafts,
                                                                      "rejected")
    found.append(bar_list(
        "drafts", "What became of the drafts",
        "Drafts agents sent unchanged, sent after editing, rejected (by reason) or discarded, "
        "by the day they decided.", [(n, totals[c], css) for n, c, css in outcome_names],
        value_name="drafts", summary=(
            f"{share(totals['sent_unchanged'] / decided)} of the decided drafts were sent "
            f"unchanged, {share(totals['sent_edited'] / decided)} after editing."
            if decided else "")))

    drafts = _by_key(figures.drafts, by)
    found.append(column_chart(
        "edits", f"How much agents edited, per {per}",
        "Mean edit distance of the replies sent after editing: 0 = sent as drafted, "
        "1 = nothing of the draft kept.", keys,
        [Series("mean edit distance", "s1", tuple(
            drafts[k]["mean_edit_distance"] if k in drafts else None for k in keys))],
        fmt=decimal, tick_text=tick))

    cost = _by_key(figures.cost, by)
    spent, estimate = _sum(figures.cost, "spent"), _sum(figures.cost, "all_cloud_estimate")

    def money(value: float) -> str:
        return f"{decimal(value)} {currency}"

    found.append(column_chart(
        "cost", f"Spent, against sending everything to the cloud ({currency})",
        f"What each {per}'s mail cost, beside what it would have cost sent entirely to the "
        "cloud model.", keys,
        [Series("spent", "s0", _values(cost, keys, "spent")),
         Series("all-cloud estimate", "s3", _values(cost, keys, "all_cloud_estimate"))],
        stacked=False, fmt=decimal, unit=f" {currency}", tick_text=tick, summary=(
            f"Spent {money(spent)} of an all-cloud estimate of {money(estimate)}: "
            f"a saving of {share(1 - spent / estimate)}." if estimate else "")))
    return tuple(found)


def tiles(figures: Figures, currency: str) -> tuple[Tile, ...]:
    """The headline figures above the charts."""
    messages = _sum(figures.volume, "messages")
    handled = _sum(figures.automation, "handled")
    automated = _sum(figures.automation, "drafted_small_model") + _sum(figures.automation,
                                                                        "drafted_cloud")
    escalated = _sum(figures.automation, "escalated")
    spent = _sum(figures.cost, "spent")
    return (Tile("emails received", count(messages), f"{count(handled)} handled"),
            Tile("drafted automatically", share(automated / handled) if handled else "–",
                 "of handled mail"),
            Tile("escalated to the cloud LLM", share(escalated / handled) if handled else "–",
                 "of handled mail"),
            Tile("spent", f"{decimal(spent)} {currency}",
                 f"{decimal(spent / handled)} per email" if handled else ""))


# --- the pages -------------------------------------------------------------------------------


def install_dashboard(app: Flask, config: Config, database: Database) -> None:
    """Add `/dashboard` and `/dashboard/<chart>.csv` (managers and admins)."""
    prices = {"stored": False}

    def refresh_prices() -> None:
        # The views price the all-cloud estimate with the stored [cost] prices, as
        # `mailbot report` does; a read-only database user keeps the stored ones.
        if prices["stored"]:
            return
        prices["stored"] = True
        try:
            with database.session() as s:
                store_prices(s, config.cost)
        except Exception as exc:  # noqa: BLE001 - the dashboard shows the stored prices
            log.warning("could not store the [cost] prices for the views: %s",
                        str(exc).splitlines()[0])

    def wanted(s: Session) -> tuple[DashboardFilter, list[tuple[int, str]]]:
        mailboxes = visible_mailboxes(s, g.user)
        return DashboardFilter.from_args(request.args, datetime.now(UTC).date(),
                                         mailboxes), mailboxes

    @app.get("/dashboard")
    @auth.require(Role.MANAGER)
    def dashboard() -> Any:
        refresh_prices()
        # Head versions first: HeadStore opens sessions of its own (one writer on SQLite).
        models = model_rows(config, database)
        with database.session() as s:
            filt, mailboxes = wanted(s)
            figures = None if filt.error else collect(s, filt, models)
        currency = config.cost.currency
        page = render_template(
            "dashboard.html.j2", filt=filt, mailboxes=mailboxes, figures=figures,
            charts=charts(figures, currency) if figures else (),
            tiles=tiles(figures, currency) if figures else (), query=filt.query(),
            mailbox_name=dict(mailboxes).get(filt.mailbox_id or -1, "every mailbox"))
        return page, 400 if filt.error else 200

    @app.get("/dashboard/<chart>.csv")
    @auth.require(Role.MANAGER)
    def dashboard_csv(chart: str) -> Any:
        if chart not in CHARTS:
            abort(404)
        refresh_prices()
        models = model_rows(config, database) if chart == "models" else ()
        with database.session() as s:
            filt, _ = wanted(s)
            if filt.error:
                return Response(f"{filt.error}\n", 400, mimetype="text/plain")
            figures = collect(s, filt, models, NEEDS[chart])
        columns, rows = table(figures, chart)
        span = "-".join(filter(None, [filt.since.isoformat() if filt.since else "",
                                      filt.until.isoformat() if filt.until else ""]))
        name = f"mailbot-{chart}{'-' + span if span else ''}.csv"
        return Response(to_csv(columns, rows), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
