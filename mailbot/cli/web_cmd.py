"""`mailbot web`: the review desk, served by waitress."""

from __future__ import annotations

import logging
import threading

import click

from mailbot.cli.common import get_state
from mailbot.errors import ExitCode

log = logging.getLogger(__name__)


def register(group: click.Group) -> None:
    group.add_command(web)


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: web.host, "
              "127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: web.port, 8025).")
def web(host: str | None, port: int | None) -> int:
    """Serve the review desk: the queue, the message pages, sending approved replies."""
    from waitress import serve

    from mailbot.db.session import Database
    from mailbot.outbox.send import drain_sends
    from mailbot.web.app import create_app

    config = get_state().config
    database = Database(config.database_url, echo=config.database.echo)
    database.ensure_schema()
    app = create_app(config, database)
    owner = app.extensions["mailbot"]["owner"]

    def finish_sends() -> None:
        # Replies a crashed desk process left half sent: checked in Sent, finished once.
        try:
            report = drain_sends(config, database, owner)
            if report.sent or report.confirmed or report.uncertain:
                log.info("replies left by an earlier run: %d sent, %d found sent, %d "
                         "uncertain", report.sent, report.confirmed, report.uncertain)
        except Exception:  # noqa: BLE001 - the worker retries these; the desk must start
            log.exception("could not finish the replies left by an earlier run")

    if any(a.smtp is not None for a in config.accounts):
        threading.Thread(target=finish_sends, name="finish-sends", daemon=True).start()
    bind_host = host or config.web.host
    bind_port = port or config.web.port
    click.echo(f"mailbot desk on http://{bind_host}:{bind_port}/", err=True)
    # Proxy headers reach the desk as sent: it trusts none of them, and /metrics refuses
    # a request that carries one (it came through a reverse proxy).
    serve(app, host=bind_host, port=bind_port, threads=config.web.threads, ident="mailbot",
          trusted_proxy=None, clear_untrusted_proxy_headers=False)
    return int(ExitCode.OK)
