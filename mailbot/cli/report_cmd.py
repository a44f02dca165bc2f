"""`mailbot report`: what the audit log says about cost, and the teacher labels it holds."""

from __future__ import annotations

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
    """Reports from the audit log."""


@report.command("cost")
@click.option("--since", type=_DATE, default=None,
              help="First day to count (YYYY-MM-DD, in cost.timezone); default: all.")
@click.option("--until", type=_DATE, default=None,
              help="Day to stop before (YYYY-MM-DD, exclusive); default: now.")
@json_option
def cost(since: datetime | None, until: datetime | None, as_json: bool) -> int:
    """Messages handled, share escalated, money spent, and the saving against all-cloud.

    "All-cloud" is what the same mail would have cost sent entirely to the cloud model: the
    recorded tokens of escalated mail, and for the rest the text length at cost.chars_per_token
    plus cost.prompt_overhead_tokens in and cost.typical_output_tokens out, at the configured
    prices.
    """
    from mailbot.audit.cost import cost_report

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
