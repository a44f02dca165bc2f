"""`mailbot user`: the review desk's accounts (agents, managers, admins)."""

from __future__ import annotations

import sys

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode


def register(group: click.Group) -> None:
    group.add_command(user)


def _database():  # type: ignore[no-untyped-def]
    from mailbot.db.session import Database

    config = get_state().config
    database = Database(config.database_url, echo=config.database.echo)
    database.ensure_schema()
    return database


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group()
def user() -> None:
    """Manage who may log in to the review desk (`mailbot web`)."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["agent", "manager", "admin"]), default="agent",
              show_default=True, help="Agents work the queue; managers also see every "
              "mailbox; admins also manage users.")
@click.option("--mailbox", "mailboxes", multiple=True, metavar="ACCOUNT/FOLDER",
              help="Limit an agent to this mailbox (repeat; default: all).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def add(name: str, role: str, mailboxes: tuple[str, ...], password_stdin: bool) -> int:
    """Add the desk user NAME."""
    from mailbot.web.auth import add_user

    database = _database()
    password = _password(password_stdin)
    with database.session() as session:
        add_user(session, name, role, password, list(mailboxes))
    click.echo(f"added {role} {name}")
    return int(ExitCode.OK)


@user.command("list")
@json_option
def list_users(as_json: bool) -> int:
    """List the desk users."""
    from sqlalchemy import select

    from mailbot.db.web import WebUser

    database = _database()
    with database.session() as session:
        rows = [{"name": u.name, "role": u.role, "mailboxes": u.mailboxes or "",
                 "last_login": u.last_login_at.isoformat() if u.last_login_at else None}
                for u in session.scalars(select(WebUser).order_by(WebUser.name))]
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("no desk users yet; add one with `mailbot user add NAME --role admin`")
    for row in [] if as_json else rows:
        click.echo(f"{row['name']}\t{row['role']}\t{row['mailboxes'] or 'all mailboxes'}\t"
                   f"last login {row['last_login'] or 'never'}")
    return int(ExitCode.OK)


@user.command("remove")
@click.argument("name")
def remove(name: str) -> int:
    """Remove the desk user NAME (the audit log keeps what they did)."""
    from mailbot.web.auth import remove_user

    database = _database()
    with database.session() as session:
        remove_user(session, name)
    click.echo(f"removed {name}")
    return int(ExitCode.OK)


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def passwd(name: str, password_stdin: bool) -> int:
    """Change the password of NAME (their open sessions end)."""
    from mailbot.web.auth import set_password

    database = _database()
    password = _password(password_stdin)
    with database.session() as session:
        set_password(session, name, password)
    click.echo(f"password of {name} changed")
    return int(ExitCode.OK)
