"""Distillation: the share of mail sent to the cloud LLM falls as the small model learns.

Starts from a small seed file (e.g. BANKING77 with 10 examples per intent), then feeds a
labelled stream in days through the real pipeline (ingest, classify, route, the cloud step
through the real client) with the local fake LLM as the teacher, and runs `mailbot learn`
after each day. The teacher answers the gold label with probability --teacher-accuracy,
otherwise a plausible wrong one (an intent whose name shares a word with the right one).

    .venv/bin/python bench/distill.py --train SEED.csv --stream STREAM.csv \
        --label-col category [--teacher-accuracy 0.95] [--days 10] [--limit N]

`--shots N` samples N examples per label from --train as the seed; when --stream is the same
file, the stream is the rest of it. BANKING77 lives in ../shared/data/banking77:

    .venv/bin/python bench/distill.py --train ../shared/data/banking77/train.csv \
        --stream ../shared/data/banking77/train.csv --shots 10 --label-col category

One line per day: messages, share escalated, accuracy of the mail the small model handled
alone, overall accuracy (the cloud's label where it classified, the small model's elsewhere),
what was spent and what the same mail would have cost all-cloud; then the learning run's
outcome. The last line: escalated_first=... escalated_last=... auto_accuracy_last=...
saving=... (over the whole stream). Targets on BANKING77 (10-shot seed, the rest of the
training set in 10 days, teacher 0.95): escalated on the last day < 15%, small-model accuracy
on the last day >= 0.95, saving >= 80%.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from click.testing import CliRunner  # noqa: E402
from sqlalchemy import select  # noqa: E402

from mailbot.audit.cost import cost_report  # noqa: E402
from mailbot.cli import cli  # noqa: E402
from mailbot.config import load_config  # noqa: E402
from mailbot.db.llm_records import TeacherLabel  # noqa: E402
from mailbot.db.models import Event  # noqa: E402
from mailbot.db.session import Database  # noqa: E402
from tests.support.fake_openai import FakeOpenAI, ReceivedRequest, Reply, sample_for_schema  # noqa: E402

_SPACE = re.compile(r"\s+")


def norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def read_rows(path: Path, text_col: str, label_col: str) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or text_col not in reader.fieldnames \
                or label_col not in reader.fieldnames:
            sys.exit(f"{path}: needs columns {text_col!r} and {label_col!r}; "
                     f"has {reader.fieldnames}")
        return [(r[text_col].strip(), r[label_col].strip()) for r in reader
                if r[text_col].strip() and r[label_col].strip()]


def sample_seed(rows: list[tuple[str, str]], shots: int, seed: int
                ) -> tuple[list[tuple[str, str]], set[int]]:
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(rows):
        by_label[label].append(i)
    chosen: set[int] = set()
    for label in sorted(by_label):
        chosen.update(rng.sample(by_label[label], min(shots, len(by_label[label]))))
    return [rows[i] for i in sorted(chosen)], chosen


def plausible_wrong(labels: list[str]) -> dict[str, list[str]]:
    """For each label, the others sharing a word of its name (else all the others)."""
    words = {label: set(label.lower().replace("-", "_").split("_")) - {"a", "the", "or"}
             for label in labels}
    near = {}
    for label in labels:
        close = [o for o in labels if o != label and words[label] & words[o]]
        near[label] = close or [o for o in labels if o != label]
    return near


class Teacher:
    """The fake cloud model's answers: the gold intent with the given accuracy."""

    def __init__(self, gold: dict[str, str], labels: list[str], accuracy: float, seed: int):
        self.gold = gold
        self.near = plausible_wrong(labels)
        self.accuracy = accuracy
        self.seed = seed
        self.wrong = 0
        self.answered = 0
        self.misses = 0

    def label_for(self, text: str) -> str | None:
        key = norm(text)
        if key in self.gold:
            return self.gold[key]
        # Pseudonymisation may have replaced a number or a name: the closest text.
        self.misses += 1
        close = difflib.get_close_matches(key, list(self.gold), n=1, cutoff=0.6)
        return self.gold[close[0]] if close else None

    def __call__(self, request: ReceivedRequest) -> Reply:
        schema = request.schema
        if schema is None:
            return Reply(content="Thank you for your message. We have looked into it and "
                                 "will make sure it is sorted out; reply to this e-mail if "
                                 "anything else comes up.")
        answer = sample_for_schema(schema)
        properties = schema.get("properties", {})
        if "intent" in properties:
            text = _customer_text(request)
            gold = self.label_for(text)
            allowed = list(properties["intent"].get("enum") or [])
            rng = random.Random(f"{self.seed}:{norm(text)}")
            label = gold if gold in allowed else (allowed[0] if allowed else gold)
            if gold in allowed and rng.random() >= self.accuracy:
                options = [o for o in self.near.get(gold, []) if o in allowed]
                label = rng.choice(options) if options else label
                self.wrong += 1
            answer["intent"] = label
            if "confidence" in answer:
                answer["confidence"] = 0.9
            self.answered += 1
        return Reply(json=answer)


def _customer_text(request: ReceivedRequest) -> str:
    """The customer's text inside the classification prompt (templates/prompts)."""
    content = str(request.messages[-1].get("content", "")) if request.messages else ""
    match = re.search(r"<body>\s*(.*?)\s*</body>", content, re.S)
    return match.group(1) if match else content


def email_for(n: int, text: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <customer{n}@example.org>"
    msg["To"] = "Support <support@bank.example>"
    msg["Date"] = format_datetime(datetime(2026, 11, 1, 9, tzinfo=UTC) + timedelta(minutes=n))
    msg["Message-ID"] = make_msgid(idstring=f"d{n}", domain="example.org")
    msg.set_content(text)  # no subject: the classifier reads exactly the query
    return msg.as_bytes()


def invoke(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    if result.exit_code != 0:
        raise SystemExit(f"mailbot {' '.join(args)} failed ({result.exit_code}):\n"
                         f"{result.output}\n{result.exception!r}")
    return result.output


def day_figures(database: Database, first_pk: int, gold: dict[int, str]) -> dict[str, Any]:
    """Escalation and accuracy of the messages from `first_pk` on."""
    with database.session() as session:
        events = session.execute(
            select(Event.message_pk, Event.stage, Event.outcome, Event.details)
            .where(Event.message_pk >= first_pk, Event.stage.in_(("classify", "route")))
        ).all()
        teacher = dict(session.execute(
            select(TeacherLabel.message_pk, TeacherLabel.label)
            .where(TeacherLabel.message_pk >= first_pk, TeacherLabel.kind == "intent")).all())
    small: dict[int, str] = {}
    route: dict[int, str] = {}
    codes: dict[int, set[str]] = {}
    for pk, stage, outcome, details in events:
        if stage == "classify":
            small[pk] = details["intent"]["label"]
        else:
            route[pk] = outcome
            codes[pk] = set((details or {}).get("codes") or ())
    messages = [pk for pk in gold if pk in route]
    escalated = [pk for pk in messages if route[pk] != "slm"]
    kept = [pk for pk in messages if route[pk] == "slm"]
    final = {pk: teacher.get(pk, small.get(pk)) for pk in messages}
    right = sum(final[pk] == gold[pk] for pk in messages)
    auto_right = sum(small.get(pk) == gold[pk] for pk in kept)
    return {
        "messages": len(messages),
        "escalated": len(escalated) / len(messages) if messages else 0.0,
        "to_llm": sum(route[pk] == "llm" for pk in messages),
        # Why: unsure (low confidence), out of scope, or both.
        "low_confidence": sum("low_confidence" in codes.get(pk, ()) for pk in escalated)
        / max(1, len(messages)),
        "out_of_scope": sum("out_of_scope" in codes.get(pk, ()) for pk in escalated)
        / max(1, len(messages)),
        "auto_accuracy": auto_right / len(kept) if kept else float("nan"),
        "accuracy": right / len(messages) if messages else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="The seed CSV.")
    parser.add_argument("--stream", type=Path, required=True, help="The labelled stream CSV.")
    parser.add_argument("--text-col", default="text")
    parser.add_argument("--label-col", default="label")
    parser.add_argument("--shots", type=int, default=0,
                        help="Sample this many examples per label from --train as the seed.")
    parser.add_argument("--teacher-accuracy", type=float, default=0.95)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--limit", type=int, default=0,
                        help="Use only this many messages of the stream (a quick run).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality-sample", type=float, default=0.0,
                        help="route.quality_sample: share of the kept mail sent to the "
                             "teacher all the same (default 0).")
    parser.add_argument("--learn-option", action="append", default=[], metavar="KEY=VALUE",
                        help="A [learn] setting for the run, in TOML (e.g. "
                             "lexical_max_examples=5000); repeatable.")
    parser.add_argument("--models", type=Path,
                        default=Path(os.environ.get("MAILBOT_TEST_MODELS", "var/models")),
                        help="Models directory holding (or to hold) the prepared encoder.")
    parser.add_argument("--keep", type=Path, default=None,
                        help="Work in this directory and keep it (default: a temporary one).")
    args = parser.parse_args()
    if not args.train.is_file() or not args.stream.is_file():
        sys.exit(f"missing data: {args.train} or {args.stream} (BANKING77 is in "
                 "../shared/data/banking77; see ../shared/data/README.md)")

    seed_rows = read_rows(args.train, args.text_col, args.label_col)
    chosen: set[int] = set()
    if args.shots:
        seed_rows, chosen = sample_seed(seed_rows, args.shots, args.seed)
    stream = read_rows(args.stream, args.text_col, args.label_col)
    if args.shots and args.stream.resolve() == args.train.resolve():
        stream = [row for i, row in enumerate(stream) if i not in chosen]
    random.Random(args.seed).shuffle(stream)
    if args.limit:
        stream = stream[: args.limit]
    labels = sorted({label for _, label in seed_rows})

    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"seed {len(seed_rows)} examples, {len(labels)} labels; stream {len(stream)} in "
          f"{args.days} days; teacher accuracy {args.teacher_accuracy}")
    teacher = Teacher({norm(t): lab for t, lab in stream}, labels, args.teacher_accuracy,
                      args.seed)
    server = FakeOpenAI().start()
    server.default = teacher
    work = args.keep or Path(tempfile.mkdtemp(prefix="distill-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, work, seed_rows, stream, server, teacher)
    finally:
        server.stop()


def run(args: argparse.Namespace, work: Path, seed_rows: list[tuple[str, str]],
        stream: list[tuple[str, str]], server: FakeOpenAI, teacher: Teacher) -> None:
    seed_csv = work / "seed.csv"
    with seed_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(seed_rows)
    config = work / "mailbot.toml"
    config.write_text("\n".join([
        f'data_dir = "{work}"', "[models]", f'dir = "{args.models.resolve()}"',
        "[classifier]", "refresh_seconds = 0", "cv_folds = 3",
        "[drafts]", 'support_address = "support@bank.example"',
        "[route]", f"quality_sample = {args.quality_sample}",
        "[llm]", f'base_url = "{server.base_url}"', 'model = "fake-teacher"',
        "[learn]", "packaged_seed = false", f'data = {{intent = ["{seed_csv}"]}}',
        "min_new_labels = 1",
        *(" = ".join(part.strip() for part in option.split("=", 1))
          for option in args.learn_option), "",
    ]))
    loaded = load_config(config)
    database = Database(loaded.database_url)
    database.ensure_schema()
    invoke(config, "model", "prepare")
    started = time.monotonic()
    invoke(config, "train", "intent", "--data", str(seed_csv))
    print(f"day 0: seed head trained on {len(seed_rows)} examples "
          f"({time.monotonic() - started:.0f}s)")
    per_day = -(-len(stream) // args.days)
    days: list[dict[str, Any]] = []
    spent_before = all_cloud_before = 0.0
    next_pk = 1
    for day in range(1, args.days + 1):
        chunk = stream[(day - 1) * per_day : day * per_day]
        if not chunk:
            break
        folder = work / f"day{day:02d}"
        folder.mkdir(exist_ok=True)
        base = (day - 1) * per_day
        for i, (text, _) in enumerate(chunk):
            (folder / f"{base + i:06d}.eml").write_bytes(email_for(base + i, text))
        t0 = time.monotonic()
        invoke(config, "ingest", str(folder))
        ingest_s = time.monotonic() - t0
        gold = {next_pk + i: label for i, (_, label) in enumerate(chunk)}
        figures = day_figures(database, next_pk, gold)
        next_pk += len(chunk)
        with database.session() as session:
            report = cost_report(session, loaded.cost)
        spent, all_cloud = report.spent - spent_before, report.all_cloud_estimate - all_cloud_before
        spent_before, all_cloud_before = report.spent, report.all_cloud_estimate
        t1 = time.monotonic()
        learned = json.loads(invoke(config, "learn", "--head", "intent", "--json", "--quiet"))[0]
        learn_s = time.monotonic() - t1
        figures.update(spent=spent, all_cloud=all_cloud, saving_total=report.saving)
        days.append(figures)
        after = learned.get("after") or {}
        print(f"day {day}: messages={figures['messages']} escalated={figures['escalated']:.1%} "
              f"(unsure {figures['low_confidence']:.1%}, out of scope "
              f"{figures['out_of_scope']:.1%}) auto_accuracy={figures['auto_accuracy']:.3f} "
              f"accuracy={figures['accuracy']:.3f} "
              f"cost={spent:.4f} all_cloud={all_cloud:.4f} | learn: {learned['action']} "
              f"on {sum(learned['sources'].values())} examples, held-back accuracy "
              f"{after.get('accuracy', float('nan')):.3f}, min confidence "
              f"{(after.get('thresholds') or {}).get('min_intent_confidence', '-')} | "
              f"ingest {ingest_s:.0f}s learn {learn_s:.0f}s", flush=True)
    print(f"teacher: {teacher.answered} answers, {teacher.wrong} wrong on purpose, "
          f"{teacher.misses} texts matched loosely; cloud requests {len(server.chat_requests)}; "
          f"total {time.monotonic() - started:.0f}s")
    print(f"escalated_first={days[0]['escalated']:.3f} escalated_last={days[-1]['escalated']:.3f}"
          f" auto_accuracy_last={days[-1]['auto_accuracy']:.3f} "
          f"saving={days[-1]['saving_total']:.3f}")


if __name__ == "__main__":
    main()
