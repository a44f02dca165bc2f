"""`mailbot classify`, `mailbot train` and `mailbot eval`: the classification heads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode

HEADS = ("intent", "priority", "sentiment")


def register(group: click.Group) -> None:
    group.add_command(classify)
    group.add_command(train)
    group.add_command(evaluate)


def _database(config: Any) -> Any:
    from mailbot.db.session import Database

    database = Database(config.database_url, echo=config.database.echo)
    database.ensure_schema()
    return database


def _progress() -> Any:
    started = time.monotonic()

    def report(message: str) -> None:
        click.echo(f"[{time.monotonic() - started:7.1f}s] {message}", err=True)

    return report


def _encoder(config: Any) -> Any:
    from mailbot.engine import ModelRegistry

    return ModelRegistry(config.models, config.models_path).encoder()


def _options(config: Any) -> Any:
    from mailbot.classify.train import TrainOptions

    return TrainOptions(folds=config.classifier.cv_folds)


@click.command()
@click.argument("text", required=False)
@click.option(
    "--file",
    "eml",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Classify an email file (.eml): its subject and new text.",
)
def classify(text: str | None, eml: Path | None) -> int:
    """Classify TEXT or an email file and print the result as JSON."""
    from mailbot.classify import Classifier, message_text

    if (text is None) == (eml is None):
        raise click.UsageError("give either TEXT or --file MESSAGE.eml")
    if eml is not None:
        text = _email_text(eml)
    assert text is not None
    config = get_state().config
    classifier = Classifier.from_config(config, _database(config))
    result = classifier.classify(message_text(None, text))
    emit_json(result.to_json())
    return int(ExitCode.OK)


def _email_text(path: Path) -> str:
    from mailbot.cli.common import read_file_bytes
    from mailbot.parse.mime import parse_message

    message = parse_message(read_file_bytes(path))
    return message.customer_text


@click.group()
def train() -> None:
    """Train a classification head from a labelled CSV and record its version."""


def _train_command(name: str) -> click.Command:
    @click.command(name=name, help=f"Train the {name} head from a CSV of examples.")
    @click.option(
        "--data",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="CSV file with a header row.",
    )
    @click.option("--text-col", default="text", show_default=True, help="Column with the text.")
    @click.option("--label-col", default="label", show_default=True, help="Column with the label.")
    @click.option(
        "--promote/--no-promote",
        default=True,
        show_default=True,
        help="Let the worker serve this version (it picks it up without a restart).",
    )
    def command(data: Path, text_col: str, label_col: str, promote: bool) -> int:
        from mailbot.classify.data import read_labeled_csv
        from mailbot.classify.store import HeadStore, train_from_examples

        config = get_state().config
        examples = read_labeled_csv(data, text_col, label_col)
        database = _database(config)
        encoder = _encoder(config)
        progress = _progress()
        progress(f"{name}: {len(examples)} examples, {len(set(examples.labels))} labels")
        head = train_from_examples(
            name, examples, encoder, options=_options(config), progress=progress
        )
        record = HeadStore(config.models_path, database).save(
            head, promote=promote, source=str(data)
        )
        emit_json(
            {
                "head": name,
                "version": record.version,
                "path": str(record.path),
                "promoted": record.promoted,
                "metrics": head.metrics,
            }
        )
        return int(ExitCode.OK)

    return command


for _name in HEADS:
    train.add_command(_train_command(_name))


@train.command(name="versions")
@click.argument("name", required=False, type=click.Choice(HEADS))
@json_option
def train_versions(name: str | None, as_json: bool) -> int:
    """List the recorded versions of the heads (all, or NAME's), oldest first."""
    from mailbot.classify.store import HeadStore

    config = get_state().config
    records = HeadStore(config.models_path, _database(config)).versions(name)
    rows = [
        {
            "head": r.name,
            "version": r.version,
            "promoted": r.promoted,
            "created_at": r.created_at.isoformat(timespec="seconds"),
            "examples": r.metrics.get("examples"),
            "cv_accuracy": r.metrics.get("cv_accuracy"),
            "path": str(r.path),
        }
        for r in records
    ]
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("no trained heads yet; the packaged seed heads are in use")
    for row in [] if as_json else rows:
        mark = "*" if row["promoted"] else " "
        click.echo(
            f"{mark} {row['head']:<9} {row['version']}  {row['created_at']}  "
            f"examples={row['examples']} cv_accuracy={row['cv_accuracy']}"
        )
    return int(ExitCode.OK)


@train.command(name="promote")
@click.argument("name", type=click.Choice(HEADS))
@click.argument("version")
@click.option("--demote", is_flag=True, help="Withdraw the version instead (roll back).")
def train_promote(name: str, version: str, demote: bool) -> int:
    """Let the worker serve VERSION of head NAME (the newest promoted version wins)."""
    from mailbot.classify.store import HeadStore

    config = get_state().config
    HeadStore(config.models_path, _database(config)).set_promoted(name, version, not demote)
    click.echo(f"{name} head {version} {'demoted' if demote else 'promoted'}")
    return int(ExitCode.OK)


@click.group(name="eval")
def evaluate() -> None:
    """Measure a head: train on one CSV, test on another."""


def _eval_command(name: str) -> click.Command:
    @click.command(name=name, help=f"Train the {name} head on --train, report on --test.")
    @click.option(
        "--train",
        "train_file",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Training CSV.",
    )
    @click.option(
        "--test",
        "test_file",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Test CSV.",
    )
    @click.option(
        "--shots",
        type=click.IntRange(min=2),
        default=None,
        help="Train on N examples per label, sampled per seed.",
    )
    @click.option(
        "--seeds",
        type=click.IntRange(min=1),
        default=None,
        help="Repetitions to average (default: 3 with --shots, else 1).",
    )
    @click.option(
        "--oos-label",
        default=None,
        help="Test rows with this label are out of scope (and left out of training).",
    )
    @click.option(
        "--holdout-intents",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Hold N intents of the training file out as out of scope, a different random "
        "choice per seed (--seeds); prints the means and their spread.",
    )
    @click.option("--text-col", default="text", show_default=True, help="Column with the text.")
    @click.option("--label-col", default="label", show_default=True, help="Column with the label.")
    def command(
        train_file: Path,
        test_file: Path,
        shots: int | None,
        seeds: int | None,
        oos_label: str | None,
        holdout_intents: int | None,
        text_col: str,
        label_col: str,
    ) -> int:
        from mailbot.classify.data import read_labeled_csv
        from mailbot.classify.evaluate import evaluate_head

        config = get_state().config
        train_set = read_labeled_csv(train_file, text_col, label_col)
        test_set = read_labeled_csv(test_file, text_col, label_col)
        report = evaluate_head(
            name,
            _encoder(config),
            train_set,
            test_set,
            shots=shots,
            seeds=seeds or (3 if shots or holdout_intents else 1),
            oos_label=oos_label,
            holdout_intents=holdout_intents,
            false_rejection=config.classifier.oos_false_rejection,
            options=_options(config),
            progress=_progress(),
        )
        width = max(len(r.label) for r in report.labels)
        click.echo(f"{'label':<{width}}  precision  recall  f1      support")
        for r in report.labels:
            figures = f"{r.precision:9.4f}  {r.recall:6.4f}  {r.f1:6.4f}  {r.support:7d}"
            click.echo(f"{r.label:<{width}}  {figures}")
        click.echo(f"train_examples={report.train_size} test_examples={report.test_size}")
        for seed, held in enumerate(report.held_out, start=1):
            click.echo(f"seed {seed} held out: {', '.join(held)}")
        click.echo("seed_accuracies=" + _figures(report.accuracies))
        click.echo(f"ece={report.ece:.4f}")
        if report.in_scope_accuracy is not None:
            click.echo("seed_in_scope_accuracies=" + _figures(report.in_scope_accuracies))
            click.echo("seed_oos_recalls=" + _figures(report.oos_recalls))
            if report.aurocs:
                click.echo("seed_oos_aurocs=" + _figures(report.aurocs))
            click.echo(f"oos_threshold={report.oos_threshold:.4f}")
            click.echo(f"in_scope_accuracy={report.in_scope_accuracy:.4f}")
            click.echo(f"oos_recall={report.oos_recall:.4f}")
            click.echo(f"oos_recall_spread={_spread(report.oos_recalls):.4f}")
            if report.oos_auroc is not None and report.fpr95 is not None:
                click.echo(f"oos_auroc={report.oos_auroc:.4f}")
                click.echo(f"fpr95={report.fpr95:.4f}")
        click.echo(f"accuracy_spread={_spread(report.accuracies):.4f}")
        click.echo(f"accuracy={report.accuracy:.4f}")
        return int(ExitCode.OK)

    return command


def _figures(values: Any) -> str:
    return ",".join(f"{v:.4f}" for v in values)


def _spread(values: Any) -> float:
    """The standard deviation over seeds (0 for one seed)."""
    import numpy as np

    return float(np.std(values)) if len(values) > 1 else 0.0


for _name in HEADS:
    evaluate.add_command(_eval_command(_name))
