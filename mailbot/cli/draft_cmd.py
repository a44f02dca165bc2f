"""`mailbot draft`: what mailbot would reply to an email, without touching any mailbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mailbot.cli.common import emit_json, get_state, json_option, read_file_bytes
from mailbot.errors import ExitCode


def register(group: click.Group) -> None:
    group.add_command(draft)


@click.command()
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The email (.eml) to answer; '-' reads standard input.")
@click.option("--account", default=None, help="Answer as this configured account.")
@click.option("--llm", "use_llm", is_flag=True,
              help="When the email would go to the cloud LLM, ask it (a paid call; the "
                   "customer's text leaves this server, pseudonymised).")
@json_option
def draft(path: Path, account: str | None, use_llm: bool, as_json: bool) -> int:
    """Print the reply mailbot would draft for an email (headers and body).

    Runs parse, classify, extract, retrieve, route and draft in memory: nothing is written to
    the database and no mailbox is touched. Mail the router sends to the cloud LLM gets no
    draft unless --llm is given. Exit code 1 when no draft would be written.
    """
    from mailbot.pipeline.runner import dry_run
    from mailbot.pipeline.wiring import build_stages

    config = get_state().config
    raw = read_file_bytes(path)
    stages = build_stages(config, _database_if_ready(config))
    results = dry_run(stages, raw, account=account)
    steps = list(results.steps)
    case = results.case
    note = None
    decision = case.decision
    if decision is not None and decision.route == "llm" and case.draft is None:
        if use_llm:
            steps.extend(_escalated(config, stages, case))
            case = steps[-1].case
        else:
            note = (f"this email would go to the cloud LLM ({decision.summary()}); no "
                    "draft without asking it: pass --llm for a paid call (the customer's "
                    "text leaves this server, pseudonymised)")
    reply = case.draft
    unsafe = case.safety is not None and not case.safety.passed
    if as_json:
        emit_json({
            "stages": [{"stage": s.stage, "outcome": s.outcome, "reason": s.reason}
                       for s in steps],
            "route": None if case.decision is None else case.decision.to_json(),
            "note": note,
            "draft": None if reply is None else {**reply.summary(), "subject": reply.subject,
                                                 "to": str(reply.to), "body": reply.body,
                                                 "held_back": unsafe},
        })
    elif reply is not None and not unsafe:
        click.echo(_readable(reply.mime))
        if reply.needs_review:
            click.echo(f"(needs review: {'; '.join(reply.review_reasons)})", err=True)
    else:
        from mailbot.route.outcome import settle

        click.echo(note or f"no draft: {settle(case).reason or steps[-1].outcome}", err=True)
    return int(ExitCode.OK if reply is not None and not unsafe else ExitCode.FAILURE)


def _escalated(config: Any, stages: list[Any], case: Any) -> list[Any]:
    """Ask the cloud LLM now, in memory, and draft from its answer (`--llm`)."""
    from mailbot.errors import ConfigError
    from mailbot.llm.client import LLMClient
    from mailbot.llm.escalate import escalate_now
    from mailbot.pipeline.runner import run_stages
    from mailbot.pipeline.wiring import intent_labels

    client = LLMClient.from_config(config)
    if client is None:
        raise ConfigError("--llm needs a cloud LLM: set llm.base_url and llm.model")
    escalation = escalate_now(case, config, client, intent_labels(config, stages))
    composer = [s for s in stages if getattr(s, "name", "") == "draft"]
    return run_stages(composer, [case.with_(escalation=escalation)])[0]


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
