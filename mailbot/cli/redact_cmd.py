"""`mailbot redact`: show exactly what a cloud call would receive for a text or an email."""

from __future__ import annotations

from pathlib import Path

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode


def register(group: click.Group) -> None:
    group.add_command(redact)


@click.command()
@click.argument("text", required=False)
@click.option(
    "--file",
    "eml",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An email file (.eml); its subject, new text and signature are redacted, and the "
    "sender's name is looked for too.",
)
@json_option
def redact(text: str | None, eml: Path | None, as_json: bool) -> int:
    """Pseudonymise TEXT or an email: print the redacted text and the placeholder map.

    Card numbers appear in the map only masked (**** 4242). With --json:
    {"redacted": "...", "placeholders": {"<EMAIL_1>": "..."}}.
    """
    from mailbot.privacy import Pseudonymiser

    if (text is None) == (eml is None):
        raise click.UsageError("give either TEXT or --file MESSAGE.eml")
    names: list[str] = []
    if eml is not None:
        from mailbot.cli.common import read_file_bytes
        from mailbot.parse.mime import parse_message

        message = parse_message(read_file_bytes(eml))
        text = message.text_with_signature
        if message.from_addr and message.from_addr.name:
            names.append(message.from_addr.name)
    assert text is not None
    pseudonymiser = Pseudonymiser.from_config(get_state().config, known_names=names)
    result = pseudonymiser.redact(text)
    if as_json:
        emit_json(result.to_json())
        return int(ExitCode.OK)
    click.echo(result.redacted)
    if result.placeholders:
        click.echo("")
        width = max(len(p) for p in result.placeholders)
        for placeholder, value in result.placeholders.items():
            click.echo(f"{placeholder:<{width}}  {' '.join(value.split())}")
    return int(ExitCode.OK)
