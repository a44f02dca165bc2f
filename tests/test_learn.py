"""`mailbot learn`: the small model learns from the cloud model's and people's labels.

Mail goes through the real pipeline with the test LLM server as the teacher (its answers
become teacher labels through the real escalation step); people's labels are rows the
review desk writes. The heads are trained with the real encoder on BANKING77 intents.
"""

from __future__ import annotations

import json
import random
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select, update

from mailbot.classify import Classifier, HeadStore
from mailbot.cli import cli
from mailbot.cli.common import run_cli
from mailbot.config import load_config
from mailbot.db import Database, HumanLabel, Message, RawMessage, TeacherLabel
from mailbot.db.base import utcnow
from mailbot.db.outcomes import LabelSource
from mailbot.learn.dataset import (
    FILE,
    HUMAN,
    SEED,
    TEACHER,
    Example,
    build_training_set,
    hold_back,
    merge,
)
from tests import test_classify as shared
from tests.support.fake_openai import FakeOpenAI, ReceivedRequest, Reply, sample_for_schema
from tests.test_classify import banking_subset, write_csv

classify_models_path = shared.classify_models_path

LABELS = 4


def _email(n: int, text: str) -> bytes:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = f"Customer {n} <customer{n}@example.org>"
    msg["To"] = "support@bank.example"
    msg["Subject"] = f"Card question from Jane Miller, call +44 20 7946 0{n:03d}"
    msg["Message-ID"] = f"<learn{n}@example.org>"
    msg.set_content(text + f"\n\nJane Miller\n+44 20 7946 0{n:03d}")
    return msg.as_bytes()


def _body(request: ReceivedRequest) -> str:
    content = str(request.messages[-1].get("content", "")) if request.messages else ""
    match = re.search(r"<body>\s*(.*?)\s*</body>", content, re.S)
    return match.group(1) if match else content


class Teacher:
    """Answers the classification with the label given for the text it recognises."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.seen: list[str] = []

    def __call__(self, request: ReceivedRequest) -> Reply:
        schema = request.schema
        if schema is None:
            return Reply(content="Thank you, we are looking into it and will be back shortly.")
        answer = sample_for_schema(schema)
        if "intent" in schema.get("properties", {}):
            body = _body(request)
            self.seen.append(body)
            answer["intent"] = next(
                (label for text, label in self.labels.items() if text in body), answer["intent"])
        return Reply(json=answer)


@pytest.fixture()
def banking() -> dict[str, Any]:
    seed_texts, seed_labels = banking_subset(LABELS, 10, "train")
    texts, labels = banking_subset(LABELS, 40, "train")
    stream = [(t, lab) for t, lab in zip(texts, labels, strict=True) if t not in set(seed_texts)]
    random.Random(7).shuffle(stream)  # the file is sorted by intent; mail is not
    return {"seed": (seed_texts, seed_labels), "stream": stream}


def _config(tmp_path: Path, models: Path, db_url: str, server: FakeOpenAI, seed: Path,
            **learn: Any) -> Path:
    extra = "\n".join(f"{k} = {json.dumps(v)}" for k, v in learn.items())
    path = tmp_path / "mailbot.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[database]\nurl = "{db_url}"\n'
        f'[models]\ndir = "{models}"\n'
        # Everything goes to the teacher (all of it "out of scope"), so that every message
        # gets a teacher label.
        "[classifier]\nrefresh_seconds = 0\ncv_folds = 3\noos_threshold = 0.0\n"
        '[drafts]\nsupport_address = "support@bank.example"\n'
        '[route]\nllm_classify = "always"\n'
        f'[llm]\nbase_url = "{server.base_url}"\nmodel = "teacher-model"\n'
        '[learn]\npackaged_seed = false\n'
        f'data = {{intent = ["{seed}"]}}\nmin_new_labels = 5\nholdout_min = 10\n{extra}\n',
        encoding="utf-8",
    )
    return path


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_cli(cli, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ingest(config: Path, tmp_path: Path, rows: list[tuple[str, str]], start: int,
            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / f"mail{start}"
    folder.mkdir()
    for i, (text, _) in enumerate(rows):
        (folder / f"{start + i:04d}.eml").write_bytes(_email(start + i, text))
    code, _, err = _cli(["--config", str(config), "ingest", str(folder)], capsys)
    assert code == 0, err


@pytest.fixture()
def setup(tmp_path: Path, classify_models_path: Path, db_url: str, fake_llm: FakeOpenAI,
          banking: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    seed_csv = write_csv(tmp_path / "seed.csv", *banking["seed"])
    config = _config(tmp_path, classify_models_path, db_url, fake_llm, seed_csv)
    code, _, err = _cli(["--config", str(config), "train", "intent", "--data", str(seed_csv)],
                        capsys)
    assert code == 0, err
    teacher = Teacher(dict(banking["stream"]))
    fake_llm.default = teacher
    return {"config": config, "teacher": teacher, "stream": banking["stream"],
            "database": Database(db_url), "seed_csv": seed_csv}


def test_learning_trains_on_the_original_text_people_win_and_erased_mail_is_left_out(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, database, stream = setup["config"], setup["database"], setup["stream"]
    rows = stream[:40]
    _ingest(config, tmp_path, rows, 0, capsys)
    with database.session() as session:
        teacher = list(session.scalars(select(TeacherLabel).where(TeacherLabel.kind == "intent")))
    assert len(teacher) == len(rows)
    # The teacher saw pseudonymised text: the customer's name is not in it.
    assert all("Jane Miller" not in t.input_text for t in teacher)

    by_pk = {t.message_pk: t for t in teacher}
    pks = sorted(by_pk)
    corrected, erased = pks[0], pks[1]
    right = by_pk[corrected].label
    wrong = next(label for _, label in stream if label != right)
    with database.session() as session:
        # The teacher was wrong about one message and an agent corrected it.
        session.execute(update(TeacherLabel).where(TeacherLabel.id == by_pk[corrected].id)
                        .values(label=wrong))
        session.add(HumanLabel(message_pk=corrected, kind="intent", value=right,
                               previous=wrong, source=LabelSource.DESK, agent="ann",
                               created_at=utcnow() - timedelta(days=1)))
        # One customer's data was erased.
        session.execute(delete(RawMessage).where(RawMessage.message_pk == erased))
        session.execute(update(Message).where(Message.id == erased).values(erased_at=utcnow()))

    loaded = load_config(config)
    with database.session() as session:
        data = build_training_set(session, "intent", files=loaded.learn.data["intent"],
                                  packaged_seed=False, holdout=(0.25, 10, 100))
    every = data.train + data.holdout
    from_mail = [e for e in every if e.message_pk is not None]
    assert erased not in {e.message_pk for e in from_mail}
    assert data.skipped_erased == 1
    chosen = next(e for e in from_mail if e.message_pk == corrected)
    assert (chosen.source, chosen.label) == (HUMAN, right)
    # The text trained on is the one the classifier reads, with the name and phone number.
    original = rows[pks.index(corrected)][0]
    assert original in chosen.text and "Jane Miller" in chosen.text
    assert chosen.text.startswith("Card question from Jane Miller")
    assert {e.source for e in data.train} == {FILE, TEACHER, HUMAN}
    assert len(data.holdout) == 10 and all(e.message_pk for e in data.holdout)
    newest = sorted(from_mail, key=lambda e: (e.labelled_at, e.label_id or 0))[-10:]
    assert {e.key for e in data.holdout} == {e.key for e in newest}

    code, out, err = _cli(["--config", str(config), "learn", "--head", "intent", "--json"],
                          capsys)
    assert code == 0, err
    (outcome,) = json.loads(out)
    assert outcome["action"] == "promoted", outcome
    assert outcome["sources"] == {"file": LABELS * 10, "teacher": 28, "human": 1}
    assert outcome["after"]["accuracy"] >= outcome["before"]["accuracy"] - 0.01
    thresholds = outcome["after"]["thresholds"]
    assert 0.3 <= thresholds["min_intent_confidence"] <= 0.95

    store = HeadStore(loaded.models_path, database)
    record = store.newest_promoted("intent")
    assert record is not None and record.version == outcome["version"]
    assert record.metrics["learn"]["sources"] == outcome["sources"]
    assert record.metrics["thresholds"] == thresholds
    recorded = json.loads((record.path / "training_data.json").read_text("utf-8"))
    assert len(recorded) == sum(outcome["sources"].values())
    assert not any("Jane" in json.dumps(r) for r in recorded)  # hashes, not text
    with database.session() as session:
        used = session.scalars(select(TeacherLabel.used_in_training_version)
                               .where(TeacherLabel.kind == "intent")).all()
        human = session.scalar(select(HumanLabel.used_in_training_version))
    assert used.count(record.version) == 28 and human == record.version

    # The classifier serves it with its recalibrated threshold.
    classifier = Classifier.from_config(loaded, database)
    result = classifier.classify(chosen.text)
    assert result.head_version == record.version
    assert result.min_confidence == thresholds["min_intent_confidence"]

    code, out, err = _cli(["--config", str(config), "model", "history", "intent"], capsys)
    assert code == 0, err
    assert f"* {record.version}" in out and "learn" in out

    # Nothing new since: the next run does not retrain.
    code, out, err = _cli(["--config", str(config), "learn", "--head", "intent"], capsys)
    assert code == 0, err
    assert "intent: skipped" in out and "learn.min_new_labels" in out


def test_a_worse_candidate_is_not_promoted(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, database, stream = setup["config"], setup["database"], setup["stream"]
    labels = sorted({label for _, label in stream})
    swapped = {a: b for a, b in zip(labels, labels[1:] + labels[:1], strict=True)}
    # A teacher that is wrong every time about the older mail...
    setup["teacher"].labels = {t: swapped[lab] for t, lab in stream}
    _ingest(config, tmp_path, stream[:60], 0, capsys)
    with database.session() as session:
        pks = sorted(session.scalars(select(Message.id)))
        # ... and agents labelled the most recent mail right.
        later = utcnow() + timedelta(minutes=5)
        for pk, (_, label) in zip(pks[-20:], stream[40:60], strict=True):
            session.add(HumanLabel(message_pk=pk, kind="intent", value=label,
                                   source=LabelSource.DESK, agent="ann", created_at=later))
    store = HeadStore(load_config(config).models_path, database)
    before = store.newest_promoted("intent")
    assert before is not None

    code, out, err = _cli(["--config", str(config), "learn", "--head", "intent"], capsys)
    assert code == 0, err
    assert "intent: kept" in out and ": worse" in out, out
    assert re.search(r"accuracy\s+\d+\.\d%\s+\d+\.\d%", out)
    after = store.newest_promoted("intent")
    assert after is not None and after.version == before.version
    versions = store.versions("intent")
    assert len(versions) == 2 and versions[-1].promoted is False
    assert versions[-1].metrics["learn"]["holdout"] == 12  # 20% of 60, all people's labels


def test_rollback_restores_the_previous_head_in_a_running_classifier(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, database, stream = setup["config"], setup["database"], setup["stream"]
    loaded = load_config(config)
    store = HeadStore(loaded.models_path, database)
    first = store.newest_promoted("intent")
    assert first is not None
    _ingest(config, tmp_path, stream[:30], 0, capsys)
    code, out, err = _cli(["--config", str(config), "learn", "--head", "intent", "--force",
                           "--json"], capsys)
    assert code == 0, err
    second = json.loads(out)[0]["version"]
    assert store.newest_promoted("intent").version == second  # type: ignore[union-attr]

    # A worker's classifier, running since before the rollback.
    from mailbot.classify.stage import ClassifyStage

    stage = ClassifyStage(Classifier.from_config(loaded, database))
    assert stage.classifier.heads["intent"].version == second

    code, out, err = _cli(["--config", str(config), "model", "rollback", "intent"], capsys)
    assert code == 0, err
    assert f"{second} -> {first.version}" in out
    stage.classifier.refresh()  # what the classify stage does before each batch
    assert stage.classifier.heads["intent"].version == first.version
    assert stage.classifier.classify(stream[0][0]).head_version == first.version

    code, out, err = _cli(["--config", str(config), "model", "rollback", "intent", second],
                          capsys)
    assert code == 0, err
    stage.classifier.refresh()
    assert stage.classifier.heads["intent"].version == second

    code, out, err = _cli(["--config", str(config), "model", "rollback", "intent", "nope"],
                          capsys)
    assert code != 0 and "no intent head with version 'nope'" in err


def _example(text: str, label: str, source: str, minute: int | None = None,
             pk: int | None = None) -> Example:
    at = utcnow() + timedelta(minutes=minute) if minute is not None else None
    return Example(text, label, source, message_pk=pk, labelled_at=at)


def test_a_person_outranks_the_teacher_files_and_seed_whatever_the_order() -> None:
    groups = [
        [_example("Where is my card?", "card_arrival", SEED)],
        [_example("where is  my CARD?", "card_delivery", FILE)],
        [_example("Where is my card?", "lost_card", TEACHER, 5, 1)],
        [_example("Where is my card? ", "card_arrival", HUMAN, 0, 1),
         _example("Refund please", "refund", HUMAN, 0, 2),
         _example("Refund please", "refund_not_showing", HUMAN, 9, 2)],
        [_example("Refund please", "wrong", TEACHER, 20, 2)],
    ]
    kept, conflicts, duplicates = merge(groups)
    assert [(e.label, e.source) for e in kept] == [("card_arrival", HUMAN),
                                                  ("refund_not_showing", HUMAN)]
    assert conflicts == 2 and duplicates == 5


def test_only_recent_labelled_mail_is_held_back() -> None:
    rows = [_example(f"seed {i}", "a", SEED) for i in range(50)]
    rows += [_example(f"mail {i}", "a", TEACHER, i, i + 1) for i in range(30)]
    train, held = hold_back(rows, 0.2, 5, 100)
    assert sorted(e.text for e in held) == sorted(f"mail {i}" for i in range(24, 30))
    assert len(train) == 74
    # Too little labelled mail to compare on: nothing is held back.
    assert hold_back(rows[:53], 0.2, 5, 100) == (rows[:53], [])


def test_gaps_cluster_the_mail_sent_away_and_a_cluster_becomes_an_intent(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, database, stream = setup["config"], setup["database"], setup["stream"]
    _ingest(config, tmp_path, stream[:24], 0, capsys)  # all of it sent to the cloud model
    code, out, err = _cli(["--config", str(config), "report", "gaps", "--clusters", "3",
                           "--json"], capsys)
    assert code == 0, err
    clusters = json.loads(out)
    assert sum(c["size"] for c in clusters) == 24
    assert [c["cluster"] for c in clusters] == [1, 2, 3]
    biggest = clusters[0]
    assert biggest["suggested"] in {label for _, label in stream}
    assert biggest["subjects"][0].startswith("Card question from")

    code, out, err = _cli(["--config", str(config), "report", "gaps", "--clusters", "3"],
                          capsys)
    assert code == 0 and "cluster 1:" in out and "cloud model says" in out

    code, out, err = _cli(["--config", str(config), "intents", "add", "Bad Name",
                           "--from-cluster", "1"], capsys)
    assert code != 0 and "not an intent name" in err
    code, out, err = _cli(["--config", str(config), "intents", "add", "gift_cards",
                           "--from-cluster", "9"], capsys)
    assert code != 0 and "has no cluster 9" in err
    code, out, err = _cli(["--config", str(config), "intents", "add", "gift_cards",
                           "--from-cluster", "1"], capsys)
    assert code == 0, err
    with database.session() as session:
        labels = session.scalars(select(HumanLabel).where(HumanLabel.value == "gift_cards")).all()
    assert len(labels) == clusters[0]["size"]
    assert all(label.source == LabelSource.IMPORT for label in labels)
    with database.session() as session:
        data = build_training_set(session, "intent", packaged_seed=False,
                                  files=[setup["seed_csv"]], holdout=(0.2, 100, 100))
    assert sum(e.label == "gift_cards" for e in data.train) == clusters[0]["size"]


def test_the_router_uses_the_threshold_learned_with_the_head() -> None:
    from dataclasses import replace as with_

    from mailbot.config import RouteSettings
    from mailbot.route.rules import confidence_rule
    from tests.test_route import classification

    settings = RouteSettings(min_intent_confidence=0.5)
    unsure = classification(confidence=0.6)
    assert confidence_rule(_route_input(unsure), settings) == []
    learned = with_(unsure, min_confidence=0.8)
    (reason,) = confidence_rule(_route_input(learned), settings)
    assert reason.code == "low_confidence" and reason.details["threshold"] == 0.8
    assert confidence_rule(_route_input(with_(unsure, min_confidence=0.4)),
                           RouteSettings(min_intent_confidence=0.7)) == []


def test_with_few_trusted_labels_the_threshold_keeps_a_safety_margin() -> None:
    from mailbot.learn.evaluate import Predictions, calibration_margin, choose_min_confidence

    # Recent mail whose calibrated confidences spread evenly from 0.80 to 0.999.
    rng = np.random.default_rng(0)
    confidence = np.sort(rng.uniform(0.80, 0.999, 2000))
    traffic = Predictions(["a"] * 2000, confidence, np.zeros(2000))
    plain = choose_min_confidence(traffic, 0.5, target=0.95, floor=0.3, ceiling=0.99)
    # Calibration checked on 770 trusted examples (ten per intent): at 95% confidence the
    # kept mail's mean confidence must reach about 0.963, so more mail goes to the cloud.
    margin = calibration_margin(770, 0.95, 0.95)
    assert 0.012 < margin < 0.014
    careful = choose_min_confidence(traffic, 0.5, target=0.95, floor=0.3, ceiling=0.99,
                                    margin=margin)
    assert careful > plain
    kept = confidence[confidence >= careful]
    assert kept.mean() >= 0.95 + margin and (confidence >= plain).sum() > len(kept)
    # As people's labels add trusted rows the margin shrinks towards none.
    assert calibration_margin(20_000, 0.95, 0.95) < margin / 5
    assert calibration_margin(770, 0.95, 0.5) == 0.0 == calibration_margin(0, 0.95, 0.95)


def _route_input(classification: Any) -> Any:
    from mailbot.parse.mime import parse_message
    from mailbot.route.rules import RouteInput
    from tests.support.mail import support_email

    return RouteInput(message=parse_message(support_email(1)), classification=classification)


def test_the_worker_learns_on_its_schedule_and_serves_the_promoted_head(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailbot.classify.stage import ClassifyStage
    from mailbot.daemon import Worker

    config, database, stream = setup["config"], setup["database"], setup["stream"]
    _ingest(config, tmp_path, stream[:30], 0, capsys)
    loaded = load_config(config)
    worker = Worker(loaded, db=database)
    stage = next(s for s in worker.pipeline.stages if isinstance(s, ClassifyStage))
    before = stage.classifier.heads["intent"].version
    worker.learn()  # the scheduled job
    store = HeadStore(loaded.models_path, database)
    promoted = store.newest_promoted("intent")
    assert promoted is not None and promoted.version != before
    assert promoted.metrics["source"] == "learn"
    stage.run_many([])  # nothing to classify: the refresh alone
    stage.classifier.refresh()
    assert stage.classifier.heads["intent"].version == promoted.version


def test_only_one_learning_run_at_a_time_across_processes(
    database: Database, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from mailbot.learn.lock import LearningBusy, learning_lock

    config = tmp_path / "mailbot.toml"
    config.write_text(f'data_dir = "{tmp_path / "var"}"\n[database]\n'
                      f'url = "{database.engine.url.render_as_string(hide_password=False)}"\n')
    with learning_lock(database, tmp_path / "var"):
        with pytest.raises(LearningBusy), learning_lock(database, tmp_path / "var"):
            pass
        # An admin's `mailbot learn` while the daemon's run holds the lock: refused at once,
        # with the reason and "try again later", before any model is loaded.
        done = subprocess.run([sys.executable, "-m", "mailbot", "--config", str(config),
                               "learn"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 75, done.stderr
        assert "another learning run is in progress" in done.stderr
    with learning_lock(database, tmp_path / "var"):  # released: the next run may go
        pass
