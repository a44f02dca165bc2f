"""`mailbot train`: versioned heads recorded in the database, and clear errors for bad CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailbot.classify import Classifier, HeadStore
from mailbot.config import load_config
from mailbot.db import Database
from tests import test_classify as shared
from tests.test_classify import banking_subset, run, write_csv

# The fixtures of test_classify: a models folder with the encoder, a per-test config.
classify_models_path = shared.classify_models_path
config_file = shared.config_file


def test_training_twice_gives_two_versions_and_the_newest_promoted_is_served(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts, labels = banking_subset(6, 25, "train")
    data = write_csv(tmp_path / "banking.csv", texts, labels, cols=("text", "category"))
    args = [
        "--config",
        str(config_file),
        "train",
        "intent",
        "--data",
        str(data),
        "--label-col",
        "category",
    ]

    code, out, err = run(args, capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["promoted"] is True
    assert "calibration fold" in err  # progress on stderr while it runs
    assert Path(first["path"]).is_dir()
    assert Path(first["path"]).parent.name == "intent"
    assert first["metrics"]["cv_accuracy"] > 0.5

    code, out, err = run([*args, "--no-promote"], capsys)
    assert code == 0, err
    second = json.loads(out)
    assert second["version"] != first["version"] and second["promoted"] is False

    config = load_config(config_file)
    store = HeadStore(config.models_path, Database(config.database_url))
    versions = store.versions("intent")
    assert [v.version for v in versions] == [first["version"], second["version"]]
    assert all(v.metrics["examples"] == len(texts) for v in versions)
    assert store.newest_promoted("intent").version == first["version"]  # type: ignore[union-attr]

    from mailbot.engine import ModelRegistry

    classifier = Classifier(ModelRegistry(config.models, config.models_path).encoder(), store)
    assert classifier.heads["intent"].version == first["version"]
    assert classifier.classify("my card has not arrived yet").intent.label in set(labels)

    code, out, err = run([*args, "--promote"], capsys)
    third = json.loads(out)
    classifier.refresh(force=True)
    assert classifier.heads["intent"].version == third["version"]

    # Rolling back from the command line: demote the newest, the one before is served again.
    base = ["--config", str(config_file), "train"]
    code, out, err = run([*base, "promote", "intent", third["version"], "--demote"], capsys)
    assert code == 0, err
    classifier.refresh(force=True)
    assert classifier.heads["intent"].version == first["version"]
    code, out, _ = run([*base, "versions", "intent", "--json"], capsys)
    listed = json.loads(out)
    assert [(v["version"], v["promoted"]) for v in listed] == [
        (first["version"], True),
        (second["version"], False),
        (third["version"], False),
    ]
    code, _, err = run([*base, "promote", "intent", "no-such-version"], capsys)
    assert code == 66 and "no intent head with version" in err


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("", [], "empty"),
        ("text,category\nhello,a\n", [], "no column named 'label'"),
        ("text,label\nhello,a\nhi,a\nyo,a\n", [], "at least two labels"),
        ("text,label\nhello,a\nhi,b\n", [], "at least 2 examples"),
        ("words,tag\nhello,a\n", ["--text-col", "body"], "no column named 'body'"),
    ],
)
def test_bad_training_files_give_a_clear_error_and_exit_code(
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    extra: list[str],
    message: str,
) -> None:
    data = tmp_path / "bad.csv"
    data.write_text(content, encoding="utf-8")
    code, out, err = run(
        ["--config", str(config_file), "train", "intent", "--data", str(data), *extra], capsys
    )
    assert code == 65
    assert message in err
    assert "Traceback" not in err and out == ""


def test_a_missing_training_file_is_reported_as_missing_input(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["--config", str(config_file), "train", "sentiment", "--data", str(tmp_path / "none.csv")],
        capsys,
    )
    assert code == 66 and "no such file" in err and "Traceback" not in err


def test_priority_and_sentiment_heads_train_the_same_way(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        ("The server is on fire, everything is down!", "urgent"),
        ("Security breach, our data is exposed right now", "urgent"),
        ("Production outage affecting all customers", "urgent"),
        ("Could you send the invoice when you can?", "low"),
        ("No rush, just a suggestion for later", "low"),
        ("Whenever you have time, a small typo on the site", "low"),
    ]
    data = write_csv(tmp_path / "p.csv", [r[0] for r in rows], [r[1] for r in rows])
    code, out, err = run(
        ["--config", str(config_file), "train", "priority", "--data", str(data)], capsys
    )
    assert code == 0, err
    assert json.loads(out)["head"] == "priority"
    config = load_config(config_file)
    store = HeadStore(config.models_path, Database(config.database_url))
    assert store.newest_promoted("priority") is not None
    assert store.newest_promoted("sentiment") is None


def test_training_is_reproducible_bit_for_bit() -> None:
    # The README's accuracy figures are what a re-run prints: the same examples and seed give
    # the same head, down to the last bit of every weight, threshold and calibration score.
    import numpy as np

    from mailbot.classify.train import TrainOptions, train_head

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 32))
    labels = [f"intent_{i % 6}" for i in range(180)]
    vectors = centres[[i % 6 for i in range(180)]] + rng.normal(scale=0.8, size=(180, 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"message {i} about {label} number {i * 7 % 13}" for i, label in enumerate(labels)]
    options = TrainOptions(folds=3, seed=5)
    first, second = (train_head("intent", texts, labels, vectors.astype(np.float32),
                                options=options) for _ in range(2))
    assert first.oos_model is not None and second.oos_model is not None
    for a, b in ((first.embed_weights, second.embed_weights),
                 (first.oos_calibration, second.oos_calibration),
                 (first.oos_model.weights, second.oos_model.weights)):
        assert np.array_equal(a, b)
    assert (first.mix, first.temperature) == (second.mix, second.temperature)
    other = train_head("intent", texts, labels, vectors.astype(np.float32),
                       options=TrainOptions(folds=3, seed=6))
    assert not np.array_equal(other.oos_calibration, first.oos_calibration)  # the seed matters
