"""`mailbot parse`: parse .eml files and print what the pipeline would see, as JSON Lines."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mailbot.cli.common import emit_json
from mailbot.errors import ExitCode


def register(group: click.Group) -> None:
    group.add_command(parse)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--full", is_flag=True, help="Also print the body, quoted history and signature in full."
)
def parse(files: tuple[str, ...], full: bool) -> int:
    """Parse email FILES (raw RFC 822 / .eml; '-' reads standard input).

    Prints one JSON object per file on its own line: `file`, `ok`, and either the parsed
    fields (`text` is the customer's new text without quotes and signature) or `error`.
    Exits 1 when any file could not be read or parsed.
    """
    from mailbot.errors import ParseError
    from mailbot.parse.mime import parse_message

    failed = 0
    for name in files:
        record: dict[str, Any] = {"file": name}
        try:
            raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
            message = parse_message(raw)
        except (OSError, ParseError) as exc:
            failed += 1
            error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            record.update(ok=False, error=error)
        else:
            fields = message.to_json()
            body = {k: fields.pop(k) for k in ("text", "new_text", "quoted", "signature")}
            record.update(ok=True, **fields, text=body["new_text"])
            if full:
                record.update(
                    full_text=body["text"], quoted=body["quoted"], signature=body["signature"]
                )
        emit_json(record, lines=True)
    return int(ExitCode.FAILURE if failed else ExitCode.OK)
