"""`mailbot draft`: what mailbot would reply to an email, without touching any mailbox."""

from __future__ import annotations

from pathlib import Path

import click

from mailbot.cli.common import emit_json, get_state, json_option, read_file_bytes
from mailbot.errors import ExitCode


def register(group: click.Group) -> None:
    group.add_command(draft)


@click.command()
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The email (.eml) to answer; '-' reads standard input.")
@click.option("--account", default=None, help="Answer as this configured account.")
@json_option
def draft(path: Path, account: str | None, as_json: bool) -> int:
    """Print the reply mailbot would draft for an email (headers and body).

    Runs parse, classify, extract, retrieve and draft in memory: nothing is written to the
    database and no mailbox is touched. Exit code 1 when no draft would be written.
    """
    from mailbot.pipeline.runner import dry_run
    from mailbot.pipeline.wiring import build_stages

    config = get_state().config
    raw = read_file_bytes(path)
    results = dry_run(build_stages(config, _database_if_ready(config)), raw, account=account)
    outcome = results.steps[-1]
    reply = results.values.get("draft")
    if as_json:
        emit_json({
            "stages": [{"stage": s, "outcome": r.outcome, "reason": r.reason}
                       for s, r in results.steps_by_name],
            "draft": None if reply is None else {**reply.summary(), "subject": reply.subject,
                                                 "to": str(reply.to), "body": reply.body},
        })
    elif reply is not None:
        click.echo(_readable(reply.mime))
        if reply.needs_review:
            click.echo(f"(needs review: {'; '.join(reply.review_reasons)})", err=True)
    else:
        click.echo(f"no draft: {outcome.reason or outcome.outcome}", err=True)
    return int(ExitCode.OK if reply is not None else ExitCode.FAILURE)


def _readable(mime: bytes) -> str:
    """Headers decoded and the text part as text (the MIME itself may be quoted-printable)."""
    from email import message_from_bytes, policy

    message = message_from_bytes(mime, policy=policy.default)
    lines = [f"{name}: {value}" for name, value in message.items()
             if name.lower() not in ("content-transfer-encoding", "mime-version")]
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    return "\n".join(lines) + "\n\n" + text


def _database_if_ready(config: object) -> object | None:
    """The configured database when it exists at the current schema (for the knowledge base
    and thread history), else None: a dry run never creates or migrates a database."""
    from mailbot.db.session import Database
    from mailbot.errors import MailbotError

    url = config.database_url  # type: ignore[attr-defined]
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    try:
        database = Database(url)
        database.check_schema()
    except MailbotError:
        return None
    return database
