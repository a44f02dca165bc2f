"""`mailbot extract`: find order numbers, amounts, dates and contacts in text or an email."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from mailbot.cli.common import emit_json, get_state, read_file_bytes
from mailbot.errors import ExitCode, PermanentError


def register(group: click.Group) -> None:
    group.add_command(extract)


def _reference(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PermanentError(f"date {value!r}: expected YYYY-MM-DD") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@click.command()
@click.argument("text", required=False)
@click.option(
    "--file",
    "eml",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An email file (.eml); its subject, new text and signature are analysed.",
)
@click.option(
    "--jsonl",
    type=click.Path(dir_okay=False, path_type=Path),
    help='JSON Lines, one {"text": ..., "intent"?: ..., "date"?: ...} per line (- = stdin).',
)
@click.option("--intent", help="List the fields this intent requires that were not found.")
@click.option(
    "--date",
    "on_date",
    help="Resolve relative dates against this day (YYYY-MM-DD; default today, "
    "--file uses the Date header).",
)
def extract(
    text: str | None, eml: Path | None, jsonl: Path | None, intent: str | None, on_date: str | None
) -> int:
    """Extract fields from TEXT, an email file or a JSON Lines file and print them as JSON.

    Prints {"fields": {NAME: {"value", "type", "span", "confidence"}}, "missing": [...],
    "rejected": [...]}; a field found several times gives a list. With --jsonl, one output
    line per input line, in order; a line that is not a JSON object with a "text" string
    gives {"line": N, "error": ...} instead, the rest still run, and the exit code is 1.
    """
    from mailbot.fields import RuleExtractor, build_schema, extract_message

    if sum(x is not None for x in (text, eml, jsonl)) != 1:
        raise click.UsageError("give exactly one of TEXT, --file MESSAGE.eml or --jsonl FILE")
    schema = build_schema(get_state().config.fields)
    reference = _reference(on_date)
    extractor = RuleExtractor()
    if jsonl is not None:
        return _extract_lines(jsonl, schema, extractor, intent, reference)
    if eml is not None:
        from mailbot.parse.mime import parse_message

        message = parse_message(read_file_bytes(eml))
        if reference is not None:
            message = _with_date(message, reference)
        analysed, extraction = extract_message(message, schema, intent=intent)
        emit_json({**extraction.to_json(), "text": analysed})
        return int(ExitCode.OK)
    assert text is not None
    extraction = extractor.extract(text, schema, intent=intent, reference=reference)
    emit_json(extraction.to_json())
    return int(ExitCode.OK)


def _with_date(message: Any, reference: datetime) -> Any:
    from dataclasses import replace

    return replace(message, date=reference)


def _extract_lines(
    path: Path, schema: Any, extractor: Any, intent: str | None, reference: datetime | None
) -> int:
    raw = read_file_bytes(path)
    failed = 0
    from mailbot.jsonlines import split_records

    for number, line in split_records(raw.decode("utf-8", errors="replace")):
        try:
            record = _parse_line(line)
            extraction = extractor.extract(
                record["text"],
                schema,
                intent=record.get("intent", intent),
                reference=_reference(record["date"]) if record.get("date") else reference,
            )
        except PermanentError as exc:
            failed += 1
            click.echo(f"mailbot: {path}:{number}: {exc}", err=True)
            emit_json({"line": number, "error": str(exc)}, lines=True)
            continue
        emit_json(extraction.to_json(), lines=True)
    return int(ExitCode.FAILURE if failed else ExitCode.OK)


def _parse_line(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PermanentError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise PermanentError('expected a JSON object with a "text" string')
    for key in ("intent", "date"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise PermanentError(f'"{key}" must be a string')
    return record
