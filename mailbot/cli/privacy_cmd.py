"""`mailbot erase` and `mailbot retention`: personal data out, the audit trail intact."""

from __future__ import annotations

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode


def register(group: click.Group) -> None:
    group.add_command(erase)
    group.add_command(retention)


@click.command()
@click.option("--sender", required=True, metavar="ADDRESS",
              help="The e-mail address whose data is to be removed (any case).")
@click.option("--yes", is_flag=True, help="Do it without asking.")
@json_option
def erase(sender: str, yes: bool, as_json: bool) -> int:
    """Remove everything personal about mail from ADDRESS (a data-protection request).

    Raw mail, subjects, the sender, drafts, extracted facts, cloud requests and teacher
    labels' text go; message rows, statuses, costs and the audit events stay, so reports
    keep their figures. The audit log records the erasure with a hash of the address.
    """
    from sqlalchemy import func, or_, select

    from mailbot.audit.retention import erase_sender
    from mailbot.db.models import Message
    from mailbot.db.session import Database

    if "@" not in sender:
        raise click.UsageError(f"--sender {sender!r}: expected an e-mail address")
    config = get_state().config
    database = Database(config.database_url, echo=config.database.echo)
    database.check_schema()
    if not yes and not as_json:
        wanted = sender.strip().lower()
        with database.session() as session:
            found = session.scalar(select(func.count()).select_from(Message).where(or_(
                func.lower(Message.sender) == wanted,
                func.lower(Message.sender).like(f"%{wanted}%"))))
        click.confirm(f"erase the personal data of {found} message(s) from {sender}?",
                      abort=True)
    with database.session() as session:
        report = erase_sender(session, sender, actor=f"cli:{_user()}")
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(f"erased {report.messages} message(s) from {sender}: {report.raw} raw, "
                   f"{report.drafts} draft(s), {report.cloud_requests} cloud request(s), "
                   f"{report.teacher_labels} teacher label(s)")
    return int(ExitCode.OK)


@click.command()
@json_option
def retention(as_json: bool) -> int:
    """Apply the retention settings now ([retention] raw_days, text_days).

    The worker does this every retention.interval_hours; this runs it by hand.
    """
    from mailbot.audit.retention import apply_retention
    from mailbot.db.session import Database

    config = get_state().config
    database = Database(config.database_url, echo=config.database.echo)
    database.check_schema()
    with database.session() as session:
        report = apply_retention(session, config.retention)
    if as_json:
        emit_json(report.to_json())
    else:
        settings = config.retention
        click.echo(f"raw mail kept {settings.raw_days or 'forever'} day(s), the rest "
                   f"{settings.text_days or 'forever'}: {report.raw} raw message(s) deleted, "
                   f"{report.messages} message(s) scrubbed")
    return int(ExitCode.OK)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
