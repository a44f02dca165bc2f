"""`mailbot eval`: train on one CSV, report on another, through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import test_classify as shared
from tests.test_classify import banking_subset, run, write_csv

# The fixtures of test_classify: a models folder with the encoder, a per-test config.
classify_models_path = shared.classify_models_path
config_file = shared.config_file


@pytest.fixture()
def banking_files(tmp_path: Path) -> tuple[Path, Path]:
    train = write_csv(
        tmp_path / "train.csv", *banking_subset(10, 40, "train"), cols=("text", "category")
    )
    test = write_csv(
        tmp_path / "test.csv", *banking_subset(10, None, "test"), cols=("text", "category")
    )
    return train, test


def accuracy_line(out: str) -> float:
    last = out.strip().splitlines()[-1]
    assert last.startswith("accuracy="), last
    return float(last.removeprefix("accuracy="))


def test_eval_reports_per_label_figures_and_ends_with_accuracy(
    config_file: Path, banking_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = banking_files
    code, out, err = run(
        [
            "--config",
            str(config_file),
            "eval",
            "intent",
            "--train",
            str(train),
            "--test",
            str(test),
            "--label-col",
            "category",
        ],
        capsys,
    )
    assert code == 0, err
    # Ten labels: chance is 10%.
    assert accuracy_line(out) > 0.8
    assert "precision" in out.splitlines()[0]
    report_labels = {line.split()[0] for line in out.splitlines()[1:11]}
    assert report_labels == set(banking_subset(10, 1, "test")[1])


def test_few_shot_eval_averages_over_seeds(
    config_file: Path, banking_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = banking_files
    code, out, err = run(
        [
            "--config",
            str(config_file),
            "eval",
            "intent",
            "--train",
            str(train),
            "--test",
            str(test),
            "--label-col",
            "category",
            "--shots",
            "5",
            "--seeds",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    seeds = next(line for line in out.splitlines() if line.startswith("seed_accuracies="))
    per_seed = [float(x) for x in seeds.split("=")[1].split(",")]
    assert len(per_seed) == 2
    assert accuracy_line(out) == pytest.approx(sum(per_seed) / 2, abs=1e-4)
    assert accuracy_line(out) > 0.6
    assert "train_examples=400" in out  # the pool sampled from, before --shots


def test_eval_with_an_out_of_scope_label(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts, labels = banking_subset(8, 40, "train")
    test_texts, test_labels = banking_subset(8, 20, "test")
    # Rows of two other intents stand in for mail we have no intent for.
    other_texts, _ = banking_subset(2, 40, "test", skip=50)
    train = write_csv(tmp_path / "train.csv", texts, labels)
    test = write_csv(
        tmp_path / "test.csv", test_texts + other_texts, test_labels + ["oos"] * len(other_texts)
    )
    code, out, err = run(
        [
            "--config",
            str(config_file),
            "eval",
            "intent",
            "--train",
            str(train),
            "--test",
            str(test),
            "--oos-label",
            "oos",
        ],
        capsys,
    )
    assert code == 0, err
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert {"oos_threshold", "in_scope_accuracy", "oos_recall", "oos_auroc", "fpr95"} <= set(lines)
    assert 0.5 < float(lines["oos_auroc"]) <= 1.0
    assert 0.0 <= float(lines["fpr95"]) <= 1.0
    assert float(lines["in_scope_accuracy"]) > 0.7
    assert float(lines["oos_recall"]) > 0.2
    assert accuracy_line(out) > 0.6


def test_eval_refuses_test_labels_it_never_saw(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = write_csv(tmp_path / "train.csv", ["a b", "c d", "e f", "g h"], ["x", "x", "y", "y"])
    test = write_csv(tmp_path / "test.csv", ["a b"], ["z"])
    code, _, err = run(
        [
            "--config",
            str(config_file),
            "eval",
            "intent",
            "--train",
            str(train),
            "--test",
            str(test),
        ],
        capsys,
    )
    assert code == 65 and "lacks: z" in err and "Traceback" not in err


def test_eval_holds_intents_out_as_out_of_scope_per_seed(
    config_file: Path, banking_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = banking_files
    args = ["--config", str(config_file), "eval", "intent", "--train", str(train)]
    args += ["--test", str(test), "--label-col", "category", "--holdout-intents", "3"]
    code, out, err = run([*args, "--seeds", "2", "--shots", "20"], capsys)
    assert code == 0, err
    held = [line for line in out.splitlines() if " held out: " in line]
    assert len(held) == 2 and held[0] != held[1]  # a different choice per seed
    assert all(len(line.split(": ", 1)[1].split(", ")) == 3 for line in held)
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    recalls = [float(x) for x in lines["seed_oos_recalls"].split(",")]
    assert float(lines["oos_recall"]) == pytest.approx(sum(recalls) / 2, abs=1e-4)
    assert float(lines["oos_recall_spread"]) >= 0.0
    assert float(lines["oos_auroc"]) > 0.6
    assert accuracy_line(out) > 0.5

    code, _, err = run([*args, "--seeds", "1", "--holdout-intents", "9"], capsys)
    assert code == 65 and "between 1 and 8" in err and "Traceback" not in err
