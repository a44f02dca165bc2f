"""`mailbot outcomes scan`: what agents did with the drafts in their mail client."""

from __future__ import annotations

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode


def register(group: click.Group) -> None:
    group.add_command(outcomes)


@click.group()
def outcomes() -> None:
    """What became of the drafts (the desk records its own; these come from the mail client)."""


@outcomes.command("scan")
@json_option
def scan(as_json: bool) -> int:
    """Read each account's Sent and Drafts folders once and record what became of its drafts.

    A reply in Sent that carries a draft's token or answers mail in the ledger is recorded as
    sent unchanged or sent edited (with the edit distance), or marks mail mailbot did not draft
    as handled; a draft missing from Drafts for outcomes.discard_after_hours, never sent, is
    discarded. Nothing on the server is changed. The worker does this every
    outcomes.scan_interval seconds.
    """
    from mailbot.db.session import Database
    from mailbot.learn.mailclient import scan_all

    config = get_state().config
    if not config.accounts:
        raise click.UsageError(
            "no accounts configured; add an [[accounts]] section (see config.example.toml)")
    database = Database(config.database_url, echo=config.database.echo)
    try:
        database.ensure_schema()
        reports = scan_all(config, database)
    finally:
        database.dispose()
    if as_json:
        emit_json([r.to_json() for r in reports])
    else:
        for r in reports:
            state = f"error: {r.error}" if r.error else "ok"
            click.echo(
                f"{r.account}: read {r.read} in {r.sent_folder or 'Sent'}; sent unchanged "
                f"{r.sent_unchanged}, sent edited {r.sent_edited}, handled {r.handled}, "
                f"discarded {r.discarded}, already recorded {r.already}"
                f"{', UIDVALIDITY changed' if r.uidvalidity_changed else ''} - {state}")
            for note in r.notes:
                click.echo(f"  {note}")
    return int(ExitCode.FAILURE if any(r.error for r in reports) else ExitCode.OK)
