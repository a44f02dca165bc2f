"""`mailbot learn`, `mailbot model history` and `mailbot model rollback`."""

from __future__ import annotations

import time
from typing import Any

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode

HEADS = ("intent", "priority", "sentiment")


def register(group: click.Group) -> None:
    group.add_command(learn)
    group.add_command(intents)
    model = group.commands.get("model")
    if isinstance(model, click.Group):
        model.add_command(history)
        model.add_command(rollback_command)
    report = group.commands.get("report")
    if isinstance(report, click.Group):
        report.add_command(gaps)


def _database(config: Any) -> Any:
    from mailbot.db.session import Database

    database = Database(config.database_url, echo=config.database.echo)
    database.ensure_schema()
    return database


def _progress(quiet: bool) -> Any:
    started = time.monotonic()

    def report(message: str) -> None:
        if not quiet:
            click.echo(f"[{time.monotonic() - started:7.1f}s] {message}", err=True)

    return report


@click.command()
@click.option("--head", "heads", multiple=True, type=click.Choice(HEADS),
              help="Learn only this head (repeat for several); default: all three.")
@click.option("--force", is_flag=True,
              help="Train even when fewer than learn.min_new_labels labels are new.")
@click.option("--promote/--no-promote", default=True, show_default=True,
              help="Promote a candidate that is not worse (--no-promote only records it).")
@click.option("--quiet", is_flag=True, help="No progress lines on standard error.")
@json_option
def learn(heads: tuple[str, ...], force: bool, promote: bool, quiet: bool,
          as_json: bool) -> int:
    """Retrain the heads from seed data, labelled files, people's and the cloud model's labels.

    Each candidate is compared with the head in service on the most recent labelled mail
    (held back from its training) and promoted only when it is not worse beyond
    learn.margin; the intent confidence threshold is recalibrated there. A running worker
    picks a promoted head up by itself.
    """
    from mailbot.learn.loop import run_learning

    config = get_state().config
    database = _database(config)
    try:
        outcomes = run_learning(config, database, names=heads or HEADS, force=force,
                                promote=promote, progress=_progress(quiet or as_json))
    finally:
        database.dispose()
    if as_json:
        emit_json([o.to_json() for o in outcomes])
        return int(ExitCode.OK)
    for outcome in outcomes:
        _print_outcome(outcome)
    return int(ExitCode.OK)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_outcome(outcome: Any) -> None:
    version = f" {outcome.version}" if outcome.version else ""
    click.echo(f"{outcome.name}: {outcome.action}{version} - {outcome.reason}")
    sources = ", ".join(f"{k} {v}" for k, v in sorted(outcome.sources.items())) or "none"
    click.echo(f"  trained on: {sources}; held back {outcome.holdout}; new labels "
               f"{outcome.new_labels}; conflicts {outcome.conflicts}; erased, skipped "
               f"{outcome.skipped_erased}; {outcome.seconds:.1f}s")
    before, after = outcome.before, outcome.after
    if before is None or after is None:
        return
    click.echo(f"  {'':22} {'before':>10} {'after':>10}")
    click.echo(f"  {'version':22} {before.version[:10]:>10} {after.version[:10] or 'new':>10}")
    click.echo(f"  {'accuracy':22} {before.accuracy:>10.1%} {after.accuracy:>10.1%}")
    if after.escalated is not None:
        click.echo(f"  {'escalated':22} {_pct(before.escalated):>10} {_pct(after.escalated):>10}")
        click.echo(f"  {'accuracy kept on SLM':22} {_pct(before.auto_accuracy):>10} "
                   f"{_pct(after.auto_accuracy):>10}")
        if before.thresholds and after.thresholds:
            click.echo(f"  {'min confidence':22} {before.thresholds.min_intent_confidence:>10.2f}"
                       f" {after.thresholds.min_intent_confidence:>10.2f}")
            click.echo(f"  {'out-of-scope threshold':22} {before.thresholds.oos_threshold:>10.3f}"
                       f" {after.thresholds.oos_threshold:>10.3f}")
    click.echo(f"  per {outcome.name} (held back, before -> after):")
    for label, (count, accuracy) in after.per_label.items():
        old = before.per_label.get(label, (count, 0.0))[1]
        click.echo(f"    {label[:40]:40} {count:>5}  {old:>6.1%} -> {accuracy:>6.1%}")


@click.command("history")
@click.argument("name", type=click.Choice(HEADS))
@json_option
def history(name: str, as_json: bool) -> int:
    """List the recorded versions of a head with their metrics; the one in service is marked."""
    from mailbot.classify.store import HeadStore
    from mailbot.learn.versions import history_row, serving

    config = get_state().config
    database = _database(config)
    try:
        store = HeadStore(config.models_path, database)
        records = store.versions(name)
        current = serving(store, name)
    finally:
        database.dispose()
    rows = [history_row(r, current is not None and r.id == current.id) for r in records]
    if as_json:
        emit_json({"head": name, "serving": current.version if current else "seed",
                   "versions": rows})
        return int(ExitCode.OK)
    if not rows:
        click.echo(f"no {name} head recorded; the seed head is in service "
                   f"(train one with `mailbot learn` or `mailbot train {name}`)")
        return int(ExitCode.OK)
    click.echo(f"{'':2}{'VERSION':24} {'CREATED':16} {'PROMOTED':8} {'SOURCE':6} {'EXAMPLES':>8} "
               f"{'CV ACC':>7} {'HELD ACC':>8} {'ESCAL':>6}")
    for row in rows:
        mark = "* " if row["serving"] else "  "
        click.echo(f"{mark}{row['version']:24} {row['created_at'][:16]:16} "
                   f"{'yes' if row['promoted'] else 'no':8} {row['source'][:6]:6} "
                   f"{row['examples'] or '-':>8} {_pct(row['cv_accuracy']):>7} "
                   f"{_pct(row['holdout_accuracy']):>8} {_pct(row['escalated']):>6}")
    if current is None:
        click.echo("* none: the seed head is in service")
    return int(ExitCode.OK)


@click.command("rollback")
@click.argument("name", type=click.Choice(HEADS))
@click.argument("version", required=False)
@json_option
def rollback_command(name: str, version: str | None, as_json: bool) -> int:
    """Go back to VERSION of a head, or to the version before the one in service.

    Running workers load it at their next refresh (classifier.refresh_seconds).
    """
    from mailbot.classify.store import HeadStore
    from mailbot.learn.versions import rollback

    config = get_state().config
    database = _database(config)
    try:
        done = rollback(HeadStore(config.models_path, database), name, version)
    finally:
        database.dispose()
    if as_json:
        emit_json({"head": name, "from": done.from_version, "to": done.to_version,
                   "demoted": list(done.demoted)})
    else:
        click.echo(f"{name}: {done.from_version or 'seed head'} -> "
                   f"{done.to_version or 'the seed head'}"
                   + (f" (demoted {', '.join(done.demoted)})" if done.demoted else ""))
    return int(ExitCode.OK)


def _printable(text: str, width: int = 70) -> str:
    """A subject fit for a terminal: control characters shown escaped, cut to `width`."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


@click.command("gaps")
@click.option("--clusters", type=click.IntRange(2, 200), default=None,
              help="How many clusters (default: about the square root of half the messages).")
@click.option("--limit", type=click.IntRange(2, 100000), default=2000, show_default=True,
              help="The most recent messages sent away to cluster.")
@json_option
def gaps(clusters: int | None, limit: int, as_json: bool) -> int:
    """Cluster the mail that went out of scope or to the cloud LLM, to find missing intents.

    Each cluster shows its size, a few subjects and the cloud model's most frequent label;
    `mailbot intents add NAME --from-cluster K` turns cluster K into a new intent.
    """
    from mailbot.engine import ModelRegistry
    from mailbot.learn.gaps import cluster_gaps

    config = get_state().config
    database = _database(config)
    try:
        encoder = ModelRegistry(config.models, config.models_path).encoder()
        found = cluster_gaps(database, encoder, config.models_path / "learn",
                             clusters=clusters, limit=limit)
    finally:
        database.dispose()
    if as_json:
        emit_json([c.to_json() for c in found])
        return int(ExitCode.OK)
    if not found:
        click.echo("no mail went out of scope or to the cloud LLM (or too little to cluster)")
        return int(ExitCode.OK)
    for cluster in found:
        suggestion = (f"{cluster.suggested} ({cluster.suggested_share:.0%} of the cloud's labels)"
                      if cluster.suggested else "none")
        click.echo(f"cluster {cluster.id}: {cluster.size} message(s); cloud model says "
                   f"{suggestion}")
        for subject in cluster.subjects:
            click.echo(f"    {_printable(subject)}")
    click.echo("Add one as an intent: mailbot intents add NAME --from-cluster K")
    return int(ExitCode.OK)


@click.group()
def intents() -> None:
    """Manage the intents the small model learns."""


@intents.command("add")
@click.argument("name")
@click.option("--from-cluster", "cluster", type=int, required=True,
              help="A cluster of the last `mailbot report gaps`.")
@click.option("--agent", default=None, help="Who added it (recorded with the labels).")
def intents_add(name: str, cluster: int, agent: str | None) -> int:
    """Label the messages of a gaps cluster with a new intent NAME (trained at the next
    `mailbot learn`)."""
    import re

    from mailbot.learn.gaps import add_intent_from_cluster

    if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
        raise click.BadParameter(
            f"{name!r} is not an intent name; use lower-case letters, digits and _, "
            "starting with a letter (e.g. gift_cards)", param_hint="NAME")
    config = get_state().config
    database = _database(config)
    try:
        count = add_intent_from_cluster(database, name, cluster, agent=agent)
    finally:
        database.dispose()
    click.echo(f"labelled {count} message(s) as {name}; `mailbot learn --head intent` "
               "trains it")
    return int(ExitCode.OK)
