"""Shared CLI plumbing: config loading, JSON output, error-to-exit-code translation."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from mailbot.config import Config, find_config_path, load_config
from mailbot.errors import ExitCode, MailbotError, PermanentError

log = logging.getLogger("mailbot")


@dataclass
class CliState:
    """What the top-level options give every command."""

    config_path: str | None = None
    verbosity: int = 0
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        """The validated config, loaded on first use (commands that need none never read it)."""
        if self._config is None:
            self._config = load_config(find_config_path(self.config_path))
            _setup_logging(self._config.worker.log_level, self.verbosity)
        return self._config


def _setup_logging(level: str, verbosity: int) -> None:
    if verbosity >= 2:
        level = "DEBUG"
    elif verbosity == 1 and level not in ("DEBUG",):
        level = "INFO"
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    root.setLevel(level)
    # Alembic announces every plugin at INFO; only its warnings matter to an operator.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_state(ctx: click.Context | None = None) -> CliState:
    ctx = ctx or click.get_current_context()
    state = ctx.find_object(CliState)
    return state if state is not None else CliState()


def json_option(func: Any) -> Any:
    """Add `--json` to a command whose output is data."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(
        func
    )


def emit_json(obj: Any, *, lines: bool = False) -> None:
    """Print one JSON document (or one JSON Lines record, on exactly one line)."""
    from mailbot.jsonlines import dumps

    click.echo(dumps(obj, indent=None if lines else 2))


def run_cli(group: click.Group, args: list[str] | None = None) -> int:
    """Run the CLI and turn known errors into one message and a named exit code."""
    try:
        result = group.main(args=args, prog_name="mailbot", standalone_mode=False)
    except MailbotError as exc:
        click.echo(f"mailbot: error: {exc}", err=True)
        return int(exc.exit_code)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("mailbot: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.USAGE) if isinstance(exc, click.UsageError) else exc.exit_code
    except KeyboardInterrupt:
        return 130
    # Commands signal failure by returning an int (or calling ctx.exit(code)).
    return int(result) if isinstance(result, int) else int(ExitCode.OK)


def read_file_bytes(path: Path) -> bytes:
    """The bytes of `path` ('-' is standard input), or a one-line error."""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        error = PermanentError(f"{path}: no such file")
        error.exit_code = ExitCode.NO_INPUT
        raise error from None
    except OSError as exc:
        raise PermanentError(f"{path}: cannot read ({exc.strerror})") from None
