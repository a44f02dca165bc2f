"""Command-line entry point: a thin layer over the library.

Each area registers its commands from its own module (see `_COMMAND_MODULES`); the modules
keep heavy imports (models, torch) inside the command functions so that `mailbot --help`
and the worker stay light.
"""

from __future__ import annotations

import importlib
import sys

import click

from mailbot.cli.common import CliState, run_cli

# Modules under mailbot.cli that each define `register(group)`.
_COMMAND_MODULES = (
    "core",
    "model_cmd",
    "parse_cmd",
    "classify_cmd",
    "report_cmd",
    "extract_cmd",
    "redact_cmd",
    "draft_cmd",
    "kb_cmd",
    "route_cmd",
    "privacy_cmd",
    "user_cmd",
    "web_cmd",
    "learn_cmd",  # after model_cmd: adds `model history` and `model rollback`
    "outcomes_cmd",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $MAILBOT_CONFIG, then ./mailbot.toml, "
    "then /etc/mailbot/mailbot.toml).",
)
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.version_option(package_name="mailbot")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """mailbot: drafts replies to support email with a small model on the CPU."""
    ctx.obj = CliState(config_path=config_path, verbosity=verbose)


for _name in _COMMAND_MODULES:
    importlib.import_module(f"mailbot.cli.{_name}").register(cli)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_cli(cli))
