"""The classify stage end to end: seed heads, packaged samples, OOS, calibration, refresh,
the generator path and the `mailbot classify` command."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from mailbot.classify import Classifier, HeadStore, message_text
from mailbot.classify.calibration import expected_calibration_error
from mailbot.classify.data import read_labeled_csv
from mailbot.classify.store import train_from_examples
from mailbot.classify.train import TrainOptions
from mailbot.cli import cli
from mailbot.cli.common import run_cli
from mailbot.config import ClassifierSettings
from mailbot.db import Database

FAST = TrainOptions(folds=3)
SAMPLES = Path(__file__).parents[1] / "mailbot" / "data" / "samples"
BANKING77 = Path(
    os.environ.get("MAILBOT_BANKING77", Path(__file__).parents[2] / "shared" / "data" / "banking77")
)

# What a support agent would file each packaged sample under.
EXPECTED_SAMPLE_INTENTS = {
    "01_order_status.eml": "order_status",
    "02_refund_request.eml": "refund",
    "03_cancellation.eml": "cancellation",
    "04_double_charge.eml": "billing",
    "05_address_change.eml": "shipping",
    "06_login_problem.eml": "account_access",
    "07_app_crash.eml": "technical_problem",
    "08_product_question.eml": "product_question",
    "09_complaint_angry.eml": "complaint",
    "10_feedback_praise.eml": "feedback",
    "11_german_return.eml": "refund",
    "16_spanish_order.eml": "order_status",
}


def banking_subset(
    labels: int, per_label: int | None, split: str, skip: int = 0
) -> tuple[list[str], list[str]]:
    """Rows of the first `labels` BANKING77 intents (after `skip`), up to `per_label` each."""
    path = BANKING77 / f"{split}.csv"
    if not path.is_file():
        pytest.skip(f"BANKING77 not found at {BANKING77} (set MAILBOT_BANKING77)")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    wanted = sorted({r["category"] for r in rows})[skip : skip + labels]
    texts, out = [], []
    seen: dict[str, int] = {}
    for row in rows:
        label = row["category"]
        if label in wanted and (per_label is None or seen.get(label, 0) < per_label):
            seen[label] = seen.get(label, 0) + 1
            texts.append(row["text"])
            out.append(label)
    return texts, out


def write_csv(
    path: Path, texts: list[str], labels: list[str], cols: tuple[str, str] = ("text", "label")
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(cols)
        writer.writerows(zip(texts, labels, strict=True))
    return path


@pytest.fixture(scope="session")
def classify_models_path(tmp_path_factory: pytest.TempPathFactory, encoder_dir: Path) -> Path:
    """A models folder with the shared encoder linked in; seed heads are cached here once."""
    path = tmp_path_factory.mktemp("classify-models")
    (path / encoder_dir.name).symlink_to(encoder_dir, target_is_directory=True)
    return path


@pytest.fixture()
def config_file(tmp_path: Path, classify_models_path: Path) -> Path:
    path = tmp_path / "mailbot.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[models]\ndir = "{classify_models_path}"\n'
        # Three calibration folds instead of five keep the tests quick.
        "[classifier]\nrefresh_seconds = 0\ncv_folds = 3\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture()
def database(config_file: Path) -> Database:
    from mailbot.config import load_config

    db = Database(load_config(config_file).database_url)
    db.upgrade()
    return db


@pytest.fixture(scope="session")
def seed_classifier(classify_models_path: Path, encoder: object) -> Classifier:
    return Classifier(encoder, HeadStore(classify_models_path, None))  # type: ignore[arg-type]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_cli(cli, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_seed_heads_file_the_packaged_samples_under_the_right_intent(
    seed_classifier: Classifier,
) -> None:
    from mailbot.parse.mime import parse_message

    files = {p.name: p for p in SAMPLES.glob("*.eml")}
    missing = sorted(set(EXPECTED_SAMPLE_INTENTS) - set(files))
    assert not missing, f"samples moved: {missing}"
    texts = []
    for name in EXPECTED_SAMPLE_INTENTS:
        message = parse_message(files[name].read_bytes())
        texts.append(message_text(message.subject, message.new_text or message.text))
    results = seed_classifier.classify_many(texts)
    got = {name: r.intent.label for name, r in zip(EXPECTED_SAMPLE_INTENTS, results, strict=True)}
    wrong = {n: (got[n], want) for n, want in EXPECTED_SAMPLE_INTENTS.items() if got[n] != want}
    # The seed set is small; allow one borderline sample (e.g. an angry refund demand).
    assert len(wrong) <= 1, wrong
    by_name = dict(zip(EXPECTED_SAMPLE_INTENTS, results, strict=True))
    assert by_name["11_german_return.eml"].language == "de"
    assert by_name["16_spanish_order.eml"].language == "es"
    assert by_name["01_order_status.eml"].language == "en"
    assert by_name["09_complaint_angry.eml"].sentiment.label == "negative"
    assert by_name["10_feedback_praise.eml"].sentiment.label == "positive"
    for result in results:
        assert result.intent.confidence >= result.intent.runner_up_confidence
        assert 0.0 <= result.out_of_scope_score <= 1.0


def test_out_of_scope_scores_are_higher_for_unknown_intents(
    encoder: object, classify_models_path: Path, tmp_path: Path
) -> None:
    train_texts, train_labels = banking_subset(10, 60, "train")
    known_texts, _ = banking_subset(10, 20, "test")
    unknown_texts, _ = banking_subset(10, 20, "test", skip=40)
    examples = read_labeled_csv(write_csv(tmp_path / "t.csv", train_texts, train_labels))
    head = train_from_examples("intent", examples, encoder, options=FAST)  # type: ignore[arg-type]
    store = HeadStore(classify_models_path, Database(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    store.database.upgrade()  # type: ignore[union-attr]
    store.save(head, promote=True)
    embed = encoder.embed  # type: ignore[attr-defined]
    known = head.predict(known_texts, embed(known_texts).vectors).out_of_scope
    unknown = head.predict(unknown_texts, embed(unknown_texts).vectors).out_of_scope
    # Ranking: a random unknown text scores above a random known one most of the time.
    auroc = (unknown[:, None] > known[None, :]).mean()
    assert auroc > 0.8, auroc
    assert np.median(unknown) > np.median(known)

    def flagged(settings: ClassifierSettings, texts: list[str]) -> float:
        classifier = Classifier(encoder, store, settings)  # type: ignore[arg-type]
        return float(np.mean([c.out_of_scope for c in classifier.classify_many(texts)]))

    # The calibrated threshold keeps false rejections near the target on unseen in-scope mail.
    assert flagged(ClassifierSettings(oos_false_rejection=0.05), known_texts) <= 0.25
    strict = flagged(ClassifierSettings(oos_false_rejection=0.5), unknown_texts)
    lenient = flagged(ClassifierSettings(oos_false_rejection=0.02), unknown_texts)
    assert strict > lenient
    assert flagged(ClassifierSettings(oos_threshold=0.0), known_texts) == 1.0
    assert flagged(ClassifierSettings(oos_threshold=1.0), unknown_texts) == 0.0


def test_confidence_is_calibrated_on_held_out_data(encoder: object, tmp_path: Path) -> None:
    train_texts, train_labels = banking_subset(20, 40, "train", skip=20)
    test_texts, test_labels = banking_subset(20, None, "test", skip=20)
    examples = read_labeled_csv(write_csv(tmp_path / "t.csv", train_texts, train_labels))
    head = train_from_examples("intent", examples, encoder, options=FAST)  # type: ignore[arg-type]
    probs = head.predict(test_texts, encoder.embed(test_texts).vectors).probabilities  # type: ignore[attr-defined]
    y = np.array([head.labels.index(label) for label in test_labels])
    ece = expected_calibration_error(probs, y)
    accuracy = float((probs.argmax(axis=1) == y).mean())
    assert accuracy > 0.8
    assert ece < 0.08, ece
    assert head.metrics and head.metrics["cv_ece"] < head.metrics["cv_ece_uncalibrated"]


def test_refresh_picks_up_a_newly_promoted_head_without_a_new_classifier(
    encoder: object, classify_models_path: Path, tmp_path: Path
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    database.upgrade()
    store = HeadStore(classify_models_path, database)
    seed = store.seed_head("intent", encoder)  # type: ignore[arg-type]
    classifier = Classifier(encoder, store, ClassifierSettings(refresh_seconds=0))  # type: ignore[arg-type]
    assert classifier.heads["intent"].version == seed.version
    assert classifier.refresh() is False

    texts, labels = banking_subset(5, 20, "train")
    examples = read_labeled_csv(write_csv(tmp_path / "t.csv", texts, labels))
    first = store.save(train_from_examples("intent", examples, encoder, options=FAST), promote=True)  # type: ignore[arg-type]
    hidden = store.save(
        train_from_examples("intent", examples, encoder, options=FAST), promote=False
    )  # type: ignore[arg-type]
    assert classifier.refresh() is True
    assert classifier.heads["intent"].version == first.version
    assert classifier.classify("I still have not received my new card").intent.label in set(labels)

    store.set_promoted("intent", hidden.version, True)
    assert classifier.refresh() is True
    assert classifier.heads["intent"].version == hidden.version
    # Demoting the newest rolls back to the one before.
    store.set_promoted("intent", hidden.version, False)
    classifier.refresh()
    assert classifier.heads["intent"].version == first.version


def test_generator_path_only_ever_answers_an_allowed_label(
    encoder: object, classify_models_path: Path, tiny_generator_dir: Path
) -> None:
    from mailbot.engine.generator import Generator

    generator = Generator.load(tiny_generator_dir)
    allowed = ["refund", "shipping", "billing", "other"]
    settings = ClassifierSettings(use_generator=True, intents=allowed)
    classifier = Classifier(
        encoder, HeadStore(classify_models_path, None), settings, generator=generator
    )  # type: ignore[arg-type]
    texts = ["I want my money back", "Where is my parcel?", "zzz qqq", "Bonjour", "invoice wrong"]
    for result in classifier.classify_many(texts):
        assert result.intent.label in allowed
        assert result.intent.runner_up in allowed
        assert result.head_version == "generator"
        assert 0.0 < result.intent.confidence <= 1.0
        # Priority and sentiment still come from the heads.
        assert result.priority.label in {"low", "normal", "high", "urgent"}


def test_classify_command_prints_json_for_text_and_for_an_email_file(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        [
            "--config",
            str(config_file),
            "classify",
            "Please cancel my subscription, I no longer need it",
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["intent"]["label"] == "cancellation"
    assert set(data) >= {
        "intent",
        "priority",
        "sentiment",
        "language",
        "out_of_scope_score",
        "out_of_scope",
        "model",
        "model_version",
        "head_version",
        "truncated",
    }
    assert data["model"] == "all-MiniLM-L6-v2"

    code, out, err = run(
        ["--config", str(config_file), "classify", "--file", str(SAMPLES / "06_login_problem.eml")],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["intent"]["label"] == "account_access"

    code, out, err = run(
        ["--config", str(config_file), "classify", "--file", str(SAMPLES / "nope.eml")], capsys
    )
    assert code == 66 and "no such file" in err and "Traceback" not in err
    code, _, err = run(["--config", str(config_file), "classify"], capsys)
    assert code == 64


def test_lexical_features_are_scikit_learns_tf_idf() -> None:
    """The runtime's own TF-IDF (no scikit-learn in the worker) matches the reference one."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from mailbot.classify.lexical import LexicalVectorizer, _grams, gram_counts

    train = ["Where is my order 12345? It has not arrived.",
             "I want a refund for order 12345, the parcel arrived damaged.",
             "Cancel my subscription please", "My card was charged twice!"]
    ours = LexicalVectorizer.fit(train, min_char_df=1)
    theirs = TfidfVectorizer(analyzer=lambda text: list(_grams(text, (2, 5))),
                             sublinear_tf=True, smooth_idf=True, norm="l2")
    theirs.fit(train)
    assert set(ours.vocabulary) == set(theirs.vocabulary_)
    column = np.array([theirs.vocabulary_[g] for g in
                       sorted(ours.vocabulary, key=ours.vocabulary.__getitem__)])
    for text in ["My order 12345 arrived damaged, I want a refund refund refund.",
                 "charged twice for my subscription", "nothing known here: xyzzy", ""]:
        indices, values = ours.transform_row(gram_counts(text))
        dense = np.zeros(ours.size, np.float32)
        dense[indices] = values
        expected = theirs.transform([text]).toarray()[0][column]
        np.testing.assert_allclose(dense, expected, atol=1e-6)
        assert ours.transform_row(text)[0].tolist() == indices.tolist()


def test_fused_out_of_scope_model_catches_more_unknown_mail_and_survives_saving(
    encoder: object, tmp_path: Path
) -> None:
    from dataclasses import replace

    from mailbot.classify.head import Head

    train_texts, train_labels = banking_subset(20, 40, "train", skip=30)
    known_texts, _ = banking_subset(20, 15, "test", skip=30)
    # Ten neighbouring BANKING77 intents the head never saw stand in for unknown mail.
    unknown_texts, _ = banking_subset(10, 15, "test", skip=50)
    examples = read_labeled_csv(write_csv(tmp_path / "t.csv", train_texts, train_labels))
    fused = train_from_examples("intent", examples, encoder, options=FAST)  # type: ignore[arg-type]
    plain = train_from_examples(  # type: ignore[arg-type]
        "intent", examples, encoder, options=replace(FAST, out_of_scope=False)
    )
    assert fused.oos_model is not None and plain.oos_model is None
    embed = encoder.embed  # type: ignore[attr-defined]
    known_vectors, unknown_vectors = embed(known_texts).vectors, embed(unknown_texts).vectors

    def caught(head: Head) -> tuple[float, float]:
        threshold = head.oos_threshold(0.05)
        known = head.predict(known_texts, known_vectors).out_of_scope > threshold
        unknown = head.predict(unknown_texts, unknown_vectors).out_of_scope > threshold
        return float(known.mean()), float(unknown.mean())

    fused_rejected, fused_recall = caught(fused)
    plain_rejected, plain_recall = caught(plain)
    assert fused_rejected <= 0.15 and plain_rejected <= 0.15
    assert fused_recall > plain_recall, (fused_recall, plain_recall)

    fused.save(tmp_path / "fused")
    loaded = Head.load(tmp_path / "fused")
    assert loaded.oos_model is not None
    np.testing.assert_allclose(
        loaded.predict(unknown_texts, unknown_vectors).out_of_scope,
        fused.predict(unknown_texts, unknown_vectors).out_of_scope,
        atol=2e-3,  # the reference vectors are stored in half precision
    )
