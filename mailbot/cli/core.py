"""The worker's own commands: run, status, ingest, demo, db."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode
from mailbot.resources import data_dir


def register(group: click.Group) -> None:
    for command in (run, status, ingest, demo, db):
        group.add_command(command)


def _describe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _database(config: Any) -> Any:
    from mailbot.db.session import Database

    return Database(config.database_url, echo=config.database.echo)


@click.command()
@click.option("--once", is_flag=True, help="Poll every mailbox once, then exit.")
@json_option
def run(once: bool, as_json: bool) -> int:
    """Run the worker: poll every configured mailbox on its schedule.

    SIGTERM (or Ctrl-C) finishes the messages in hand, then exits cleanly. With --once the exit
    code is 0 when every mailbox was polled without error and 1 otherwise.
    """
    from mailbot.daemon import Worker

    config = get_state().config
    if not config.accounts:
        raise click.UsageError(
            "no accounts configured; add an [[accounts]] section (see config.example.toml)"
        )
    worker = Worker(config)
    if not once:
        worker.run_forever()
        return int(ExitCode.OK)
    reports = worker.poll_all()
    if as_json:
        emit_json([asdict(r) for r in reports])
    else:
        for r in reports:
            state = f"error: {r.error}" if r.error else (
                f"skipped: being polled by {r.lease_held_by}" if r.lease_held_by else "ok")
            click.echo(
                f"{r.account}/{r.mailbox}: fetched {r.fetched}, processed {r.processed}, "
                f"over-size {r.oversize}, re-matched {r.rematched}"
                f"{', UIDVALIDITY changed' if r.uidvalidity_changed else ''} - {state}"
            )
    return int(ExitCode.FAILURE if any(r.error for r in reports) else ExitCode.OK)


@click.command()
@json_option
def status(as_json: bool) -> int:
    """Show each mailbox: last poll, last UID, messages by status, last error, and what an
    admin must look at (quarantined messages, server actions given up)."""
    from mailbot.ingest.ledger import mailbox_statuses

    config = get_state().config
    database = _database(config)
    database.check_schema()
    with database.session() as session:
        rows = mailbox_statuses(session)
    if as_json:
        emit_json([asdict(r) for r in rows])
        return int(ExitCode.OK)
    click.echo(f"data directory: {config.data_path}\ndatabase: {_describe_url(database.url)}\n"
               f"models: {config.models_path}\n")
    if not rows:
        click.echo("no mailbox has been polled yet")
        return int(ExitCode.OK)
    table = [("MAILBOX", "LAST POLL (UTC)", "UIDVALIDITY", "LAST UID", "MESSAGES", "STATE")]
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())) or "-"
        last_poll = r.last_poll_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_poll_at else "never"
        state = ("error" if r.last_error else "ok") + (" (polling now)" if r.lease_owner else "")
        table.append((f"{r.account}/{r.mailbox}", last_poll, str(r.uidvalidity or "-"),
                      str(r.last_uid), counts, state))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r.last_error:
            when = r.last_error_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_error_at else "?"
            click.echo(f"\n{r.account}/{r.mailbox}: last error at {when} "
                       f"({r.consecutive_failures} in a row): {r.last_error}")
        for q in r.quarantined:
            click.echo(f"\n{r.account}/{r.mailbox}: message {q['id']} quarantined "
                       f"({q['subject'] or 'no subject'}): {q['reason']}")
        for f in r.outbox_failed:
            click.echo(f"\n{r.account}/{r.mailbox}: a {f['kind']} was given up: {f['error']}")
    return int(ExitCode.OK)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--mailbox", default="files", show_default=True,
              help="Name to file these messages under (account 'local').")
@json_option
def ingest(paths: tuple[Path, ...], mailbox: str, as_json: bool) -> int:
    """Backfill from a Maildir folder or .eml files through the same pipeline."""
    from mailbot.ingest.maildir import ingest_local
    from mailbot.pipeline.wiring import build_pipeline

    config = get_state().config
    database = _database(config)
    database.ensure_schema()
    stop = _stop_on_signals()
    built = build_pipeline(config, database, stop=stop)
    report = ingest_local(database, paths, built.pipeline, escalations=built.escalations,
                          mailbox_name=mailbox, stop=stop)
    if as_json:
        emit_json(asdict(report))
    else:
        click.echo(f"{report.files} file(s): {report.ingested} ingested, "
                   f"{report.already_known} already in the ledger, {report.processed} processed")
    return int(ExitCode.OK)


def _stop_on_signals() -> Any:
    """An event SIGTERM and Ctrl-C set: the messages in hand are finished and recorded, the
    waits between cloud retries cut short, and the rest is left for the next run."""
    import signal
    import threading

    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        logging.getLogger("mailbot").info("received %s; finishing what is in hand",
                                          signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def sample_dir() -> Path:
    return data_dir() / "samples"


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo database from an earlier run.")
@json_option
def demo(keep: bool, as_json: bool) -> int:
    """Process the sample support emails that ship with mailbot, with no server.

    Uses a SQLite database of its own (<data_dir>/demo/demo.db), prepares the default model
    when it is missing, and prints what happened to each email.
    """
    from mailbot.db.session import Database
    from mailbot.ingest.maildir import ingest_local
    from mailbot.pipeline.wiring import build_pipeline

    state = get_state()
    config = state.config
    if not state.verbosity:
        # The demo prints what it did; the worker's progress log would only interleave.
        logging.getLogger("mailbot").setLevel(logging.WARNING)
    # The demo's own database, apart from the worker's (<data_dir>/mailbot.db).
    db_path = config.data_path / "demo" / "demo.db"
    if not keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    if not as_json:
        click.echo(f"data directory: {config.data_path}\nmodels: {config.models_path}\n"
                   f"demo database: {db_path}\n")
    database = Database(f"sqlite:///{db_path}")
    database.upgrade()
    stages = _demo_stages(config, database, quiet=as_json)
    if config.classifier.enabled:
        # The sample policy pages the drafts are grounded in.
        from mailbot.kb.knowledge import KnowledgeBase

        KnowledgeBase.from_config(config, database).add([data_dir() / "kb"])
    shown: list[dict[str, Any]] = []

    def show(path: Path, processed: Any) -> None:
        record = _demo_record(path, processed)
        shown.append(record)
        if not as_json:
            _print_demo_record(record)

    built = build_pipeline(config, database, stages=stages)
    report = ingest_local(database, [sample_dir()], built.pipeline,
                          escalations=built.escalations, mailbox_name="demo", on_message=show)
    if as_json:
        emit_json({"database": str(db_path), "messages": shown})
        return int(ExitCode.OK)
    skipped = sum(1 for r in shown if r["status"] == "skipped")
    click.echo(
        f"\n{report.ingested} sample emails processed ({skipped} left alone as auto-replies or "
        f"bounces). Audit log: {db_path}\n"
        f"  try: sqlite3 {db_path} 'select stage, outcome, count(*) from events group by 1, 2'"
    )
    return int(ExitCode.OK)


def _demo_stages(config: Any, database: Any, *, quiet: bool) -> list[Any]:
    """The pipeline's stages; a missing default model is prepared first when the `convert`
    extra is installed (otherwise the error names the command that creates it)."""
    from importlib.util import find_spec

    from mailbot.errors import ModelError
    from mailbot.pipeline.wiring import build_stages

    try:
        return build_stages(config, database)
    except ModelError as exc:
        if find_spec("torch") is None or find_spec("transformers") is None:
            raise ModelError(
                f"{exc}\nThe demo needs the default model once: install the convert extra and "
                "prepare it with: pip install 'mailbot[convert]' && mailbot model prepare"
            ) from None
    click.echo(f"preparing the default model in {config.models_path} "
               "(once; this takes a minute or two)...", err=quiet)
    import contextlib
    import sys

    # With --json, stdout carries only the demo's JSON.
    with contextlib.redirect_stdout(sys.stderr if quiet else sys.stdout):
        click.get_current_context().invoke(_prepare_command())
    return build_stages(config, database)


def _prepare_command() -> click.Command:
    from mailbot.cli.model_cmd import prepare_command

    return prepare_command


def _demo_record(path: Path, processed: Any) -> dict[str, Any]:
    case = processed.case
    message = case.message if case is not None else None
    record: dict[str, Any] = {
        "file": path.name,
        "status": str(processed.status),
        "reason": processed.reason,
        "from": message.from_addr.email if message and message.from_addr else None,
        "subject": message.subject if message else None,
        "text": (message.new_text if message else "")[:200],
    }
    classification = case.classification if case is not None else None
    if classification is not None:
        record["intent"] = classification.intent.to_json()
        record["priority"] = classification.priority.label
        record["sentiment"] = classification.sentiment.label
        record["language"] = classification.language
        record["out_of_scope"] = classification.out_of_scope
    draft = case.draft if case is not None and processed.status == "drafted" else None
    if draft is not None:
        record["draft"] = {"template": draft.template, "language": draft.language,
                           "fields": dict(draft.fields), "body": draft.body,
                           "needs_review": draft.needs_review}
    return record


def _print_demo_record(record: dict[str, Any]) -> None:
    click.echo(f"- {record['file']}: {record['subject']!r} from {record['from']}")
    reason = f" ({record['reason']})" if record["reason"] else ""
    click.echo(f"    status: {record['status']}{reason}")
    if "intent" in record:
        intent = record["intent"]
        click.echo(
            f"    intent: {intent['label']} ({intent['confidence']:.0%}; runner-up "
            f"{intent['runner_up']}), priority {record['priority']}, sentiment "
            f"{record['sentiment']}, language {record['language']}"
            + (", out of scope" if record["out_of_scope"] else "")
        )
    snippet = " ".join(record["text"].split())[:120]
    if snippet:
        click.echo(f"    text:   {snippet}")
    if record.get("draft"):
        draft = record["draft"]
        fields = ", ".join(f"{k}={v}" for k, v in draft["fields"].items()) or "none"
        click.echo(f"    fields: {fields}")
        click.echo(f"    draft:  ({draft['template']}"
                   + (", needs review" if draft["needs_review"] else "") + ")")
        for line in draft["body"].rstrip().splitlines():
            click.echo(f"      | {line}")


@click.group()
def db() -> None:
    """Manage the ledger and audit database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> int:
    """Apply migrations up to REVISION (default: the newest)."""
    database = _database(get_state().config)
    database.upgrade(revision)
    click.echo(f"database at revision {database.current_revision()}")
    return int(ExitCode.OK)


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> int:
    """Revert migrations down to REVISION ('base' removes every table)."""
    database = _database(get_state().config)
    database.downgrade(revision)
    click.echo(f"database at revision {database.current_revision() or 'base'}")
    return int(ExitCode.OK)


@db.command("current")
@json_option
def db_current(as_json: bool) -> int:
    """Show the database's schema revision and the one this mailbot needs."""
    database = _database(get_state().config)
    current, head = database.current_revision(), database.head_revision()
    if as_json:
        emit_json({"current": current, "head": head, "up_to_date": current == head})
    else:
        click.echo(f"current {current or 'none'}, needed {head}"
                   + ("" if current == head else " - run `mailbot db upgrade`"))
    return int(ExitCode.OK)


__all__ = ["register"]
