"""`mailbot route`: where mailbot would send an email (small model, cloud LLM, person, skip)."""

from __future__ import annotations

from pathlib import Path

import click

from mailbot.cli.common import emit_json, get_state
from mailbot.errors import ExitCode


def register(group: click.Group) -> None:
    group.add_command(route)


@click.command()
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The email (.eml) to route; '-' reads standard input.")
@click.option("--account", default=None,
              help="Route as mail of this configured account (for route.no_cloud).")
def route(path: Path, account: str | None) -> int:
    """Print the route decision for an email and its reasons, as JSON.

    Runs parse, classify, extract and route in memory: no database, no cloud LLM call, no
    mailbox. Thread history and budgets are not known here, so those rules do not fire.
    """
    from mailbot.cli.common import read_file_bytes
    from mailbot.pipeline.runner import dry_run
    from mailbot.pipeline.wiring import build_stages

    config = get_state().config
    raw = read_file_bytes(path)
    results = dry_run(build_stages(config, until="route"), raw, account=account)
    case = results.case
    decision = case.decision
    last = results.steps[-1]
    payload = {
        "route": decision.route if decision is not None else None,
        "reasons": [] if decision is None else [r.to_json() for r in decision.reasons],
        "codes": [] if decision is None else decision.codes,
        "stopped_at": None if decision is not None else last.stage,
        "reason": last.reason,
        "intent": None if case.classification is None else case.classification.intent.to_json(),
        "stages": [{"stage": s.stage, "outcome": s.outcome, "reason": s.reason}
                   for s in results.steps],
    }
    if decision is None and not config.route.enabled:
        payload["reason"] = "routing is off (route.enabled = false)"
    emit_json(payload)
    return int(ExitCode.OK)
