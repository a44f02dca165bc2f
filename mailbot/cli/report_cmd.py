"""`mailbot report`: what the audit log says about cost, and the teacher labels it holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode


def register(group: click.Group) -> None:
    group.add_command(report)


_DATE = click.DateTime(formats=["%Y-%m-%d"])


def _database(config: Any) -> Any:
    from mailbot.db.session import Database

    database = Database(config.database_url, echo=config.database.echo)
    database.check_schema()
    return database


def _midnight(value: datetime | None, timezone: str) -> datetime | None:
    from mailbot.audit.cost import local_midnight

    return local_midnight(value.date(), timezone) if value is not None else None


@click.group()
def report() -> None:
    """Reports from the audit log (the figures of the SQL views in docs/sql.md)."""


_GROUPINGS = ["day", "week", "intent", "language", "mailbox"]


def _view_options(func: Any) -> Any:
    func = json_option(func)
    func = click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")(func)
    func = click.option("--by", type=click.Choice(_GROUPINGS), default="day", show_default=True,
                        help="One row per day, week (from Monday), intent, language or "
                             "mailbox.")(func)
    func = click.option("--until", type=_DATE, default=None,
                        help="Day to stop before (YYYY-MM-DD, UTC, exclusive).")(func)
    func = _mailbox_option(func)
    return click.option("--since", type=_DATE, default=None,
                        help="First day to count (YYYY-MM-DD, UTC); default: all.")(func)


def _mailbox_option(func: Any) -> Any:
    return click.option("--mailbox", default=None, metavar="ACCOUNT/FOLDER",
                        help="Only mail that arrived in this mailbox, e.g. support/INBOX.")(func)


def _view_report(name: str, since: datetime | None, until: datetime | None, by: str,
                 as_json: bool, as_csv: bool, mailbox: str | None = None) -> int:
    from mailbot.audit.reports import ReportError, build_report, find_mailbox, store_prices

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    first, last = (since.date() if since else None), (until.date() if until else None)
    if first and last and last <= first:
        raise click.BadParameter("--until must be a later day than --since", param_hint="--until")
    config = get_state().config
    database = _database(config)
    try:
        _refresh_prices(database, config, store_prices)
        with database.session() as session:
            mailbox_id = find_mailbox(session, mailbox) if mailbox else None
            result = build_report(session, name, by=by, since=first, until=last,
                                  mailbox_id=mailbox_id)
    except ReportError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        database.dispose()
    if as_json:
        emit_json(result.to_json())
    elif as_csv:
        _print_csv(result.columns, result.rows)
    else:
        _print_table(result.columns, result.rows)
    return int(ExitCode.OK)


def _refresh_prices(database: Any, config: Any, store: Any) -> None:
    """Give the views this config's prices (a read-only database user keeps the stored ones)."""
    from sqlalchemy.exc import SQLAlchemyError

    from mailbot.errors import MailbotError

    try:
        with database.session() as session:
            store(session, config.cost)
    except (SQLAlchemyError, MailbotError) as exc:
        click.echo(f"mailbot: warning: could not store the [cost] prices for the views "
                   f"({str(exc).splitlines()[0]}); the all-cloud estimate uses the stored ones",
                   err=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 0.001 or value == 0 else f"{value:.3g}"
    return str(value)


def _print_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no messages in this window")
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(columns, widths, strict=True))))
    for r in cells:
        click.echo("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                             for i, (v, w) in enumerate(zip(r, widths, strict=True))))


def _print_csv(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    from mailbot.audit.reports import to_csv

    click.echo(to_csv(columns, rows), nl=False)


@report.command("volume")
@_view_options
def volume(since: datetime | None, until: datetime | None, mailbox: str | None,
           by: str, as_csv: bool, as_json: bool) -> int:
    """Emails that arrived: handled, skipped, failed, drafted, escalated, given to a person."""
    return _view_report("volume", since, until, by, as_json, as_csv, mailbox)


@report.command("automation")
@_view_options
def automation(since: datetime | None, until: datetime | None, mailbox: str | None,
               by: str, as_csv: bool, as_json: bool) -> int:
    """Shares of handled mail drafted by the small model, the cloud LLM, or given to a person."""
    return _view_report("automation", since, until, by, as_json, as_csv, mailbox)


@report.command("escalations")
@_view_options
def escalations(since: datetime | None, until: datetime | None, mailbox: str | None,
                by: str, as_csv: bool, as_json: bool) -> int:
    """Why mail left the small model, with the cloud LLM's calls, failures, tokens and cost."""
    return _view_report("escalations", since, until, by, as_json, as_csv, mailbox)


@report.command("drafts")
@_view_options
def drafts(since: datetime | None, until: datetime | None, mailbox: str | None,
           by: str, as_csv: bool, as_json: bool) -> int:
    """What became of the drafts: sent unchanged, edited (and how much), rejected, discarded."""
    return _view_report("drafts", since, until, by, as_json, as_csv, mailbox)


@report.command("latency")
@_view_options
def latency(since: datetime | None, until: datetime | None, mailbox: str | None,
            by: str, as_csv: bool, as_json: bool) -> int:
    """Time from arrival to the draft and to the first reply sent: median and 90th percentile."""
    return _view_report("latency", since, until, by, as_json, as_csv, mailbox)


@report.command("cost")
@click.option("--since", type=_DATE, default=None,
              help="First day to count (YYYY-MM-DD, in cost.timezone; UTC with --by); "
                   "default: all.")
@click.option("--until", type=_DATE, default=None,
              help="Day to stop before (YYYY-MM-DD, exclusive); default: now.")
@click.option("--by", type=click.Choice(_GROUPINGS), default=None,
              help="Group by day, week, intent, language or mailbox (the views' figures).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (implies --by day).")
@_mailbox_option
@json_option
def cost(since: datetime | None, until: datetime | None, by: str | None, as_csv: bool,
         mailbox: str | None, as_json: bool) -> int:
    """Messages handled, share escalated, money spent, and the saving against all-cloud.

    "All-cloud" is what the same mail would have cost sent entirely to the cloud model: the
    recorded tokens of escalated mail, and for the rest the text length at cost.chars_per_token
    plus cost.prompt_overhead_tokens in and cost.typical_output_tokens out, at the configured
    prices. Without --by the events of the window are counted (as the budget counts them);
    with --by (or --mailbox) each message's costs belong to the day it arrived, as in v_daily.
    """
    from mailbot.audit.cost import cost_report

    if by is not None or as_csv or mailbox:
        return _view_report("cost", since, until, by or "day", as_json, as_csv, mailbox)
    config = get_state().config
    settings = config.cost
    start, end = _midnight(since, settings.timezone), _midnight(until, settings.timezone)
    if start and end and end <= start:
        raise click.BadParameter("--until must be a later day than --since", param_hint="--until")
    database = _database(config)
    try:
        with database.session() as session:
            result = cost_report(session, settings, since=start, until=end)
    finally:
        database.dispose()
    if as_json:
        emit_json(result.to_json())
        return int(ExitCode.OK)
    cur = result.currency
    window = " ".join(filter(None, [
        f"since {since:%Y-%m-%d}" if since else "",
        f"until {until:%Y-%m-%d}" if until else "",
    ])) or "all time"
    click.echo(f"Cost report, {window} ({settings.timezone}), in {cur}")
    click.echo(f"  messages handled      {result.messages}")
    click.echo(f"  escalated to the LLM  {result.escalated} ({result.escalated_share:.1%})")
    click.echo(f"  spent                 {result.spent:.6f} {cur}  (cloud LLM "
               f"{result.spent_llm:.6f}, small model and other {result.spent_local:.6f})")
    click.echo(f"  all-cloud estimate    {result.all_cloud_estimate:.6f} {cur}  "
               f"({result.all_cloud_tokens_in} tokens in, {result.all_cloud_tokens_out} out)")
    if result.all_cloud_estimate > 0:
        click.echo(f"  saving                {result.saving:.1%}")
    else:
        click.echo("  saving                n/a (nothing to compare)")
    a = result.assumptions
    click.echo(
        f"All-cloud estimate: recorded tokens for escalated mail; for the other "
        f"{result.estimated_messages} message(s) text length at {a['chars_per_token']:g} "
        f"chars/token + {a['prompt_overhead_tokens']} prompt tokens in and "
        f"{a['typical_output_tokens']} tokens out, at {a['llm_input_per_million']:g} / "
        f"{a['llm_output_per_million']:g} {cur} per million tokens in / out."
    )
    return int(ExitCode.OK)


@report.command("teacher-labels")
@click.option("--kind", type=click.Choice(["intent", "priority", "sentiment", "language"]),
              default="intent", show_default=True, help="Which label to export.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV file to write (columns text,label, for `mailbot train --data`).")
@click.option("--since", type=_DATE, default=None, help="Only labels from this day on.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=None,
              help="Only labels the cloud LLM was at least this sure of.")
@click.option("--unused", is_flag=True, help="Only labels no model was trained on yet.")
@json_option
def teacher_labels(kind: str, output: Path, since: datetime | None,
                   min_confidence: float | None, unused: bool, as_json: bool) -> int:
    """Export the cloud LLM's answers on escalated mail as training data (text,label)."""
    from mailbot.llm.teacher import export_teacher_labels

    config = get_state().config
    database = _database(config)
    try:
        with database.session() as session:
            count = export_teacher_labels(
                session, output, kind, since=_midnight(since, config.cost.timezone),
                min_confidence=min_confidence, unused_only=unused,
            )
    except OSError as exc:
        raise click.FileError(str(output), hint=exc.strerror or str(exc)) from None
    finally:
        database.dispose()
    if as_json:
        emit_json({"kind": kind, "output": str(output), "rows": count})
    else:
        click.echo(f"{count} {kind} label(s) written to {output}")
    return int(ExitCode.OK)
