"""Several real `mailbot run` processes on one PostgreSQL database, one Dovecot and the fake
cloud LLM: what bench/scale.py, bench/soak.py and the soak test drive.

Everything is real but the cloud LLM: worker processes started as an admin starts them,
mail APPENDed to Dovecot, the ledger in PostgreSQL. `Cluster.tally()` reads back what a
user would check: every message once, one draft per drafted message in the Drafts folder,
no cloud call paid twice, the budget kept, nothing stuck.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailbot.compose.mime import TOKEN_HEADER
from tests.support.dovecot import DovecotServer, ImapUser
from tests.support.fake_openai import FakeOpenAI
from tests.support.mail import out_of_office, support_email

ROOT = Path(__file__).resolve().parents[2]
SETTLED = ("drafted", "needs_human", "skipped", "failed", "quarantined", "parsed",
           "classified")

_HARD = [
    "Order A{n:05d} is three weeks late. My lawyer will take you to court if it is not "
    "delivered by Friday.",
    "This is UNACCEPTABLE. Order A{n:05d} is two weeks late, nobody answers, and I want my "
    "money back NOW.",
    "Under the GDPR I ask you to delete all my personal data and confirm in writing "
    "(customer {n}).",
]


def corpus(count: int, *, seed: int = 7, hard_share: float = 0.3,
           auto_share: float = 0.05) -> list[bytes]:
    """`count` distinct support emails: routine ones, about `hard_share` the router sends to
    the cloud LLM, and a few auto-replies."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        draw = rng.random()
        sender = f"Customer {n} <customer{n}@example.org>"
        if draw < auto_share:
            out.append(out_of_office(n))
        elif draw < auto_share + hard_share:
            body = rng.choice(_HARD).format(n=n)
            out.append(support_email(n, body=body, sender=sender, subject=f"Order A{n:05d}"))
        else:
            out.append(support_email(n, sender=sender))
    return out


def scratch_postgres(admin_url: str) -> str:
    """A new, empty PostgreSQL database; returns its URL."""
    import psycopg

    name = f"mailbot_cluster_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_postgres(admin_url: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Tally:
    """What a user checks after the run."""

    messages: int  # appended to the server
    ledger: int  # rows in the ledger
    duplicates: int  # ledger rows beyond one per message, parse passes beyond one
    drafted: int
    drafts_missing: int  # drafted messages without exactly one draft in Drafts
    drafts_extra: int  # drafts in Drafts beyond one per drafted message
    llm_calls: int
    # Cloud calls the provider billed more than once for one message, task and step (a
    # repair of a malformed answer is a step of its own), whether the same request was
    # sent again or the message was planned a second time.
    paid_twice: int
    budget_overrun: float
    stuck: int  # messages or outbox rows not settled
    statuses: dict[str, int]
    # For each (message, task) paid more than once: its requests as (id, state, error) and
    # what the provider billed per request key. Empty when nothing was paid twice.
    paid_twice_detail: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        """The bench's last line."""
        return (f"messages={self.messages} ledger={self.ledger} duplicates={self.duplicates} "
                f"drafts_missing={self.drafts_missing} drafts_extra={self.drafts_extra} "
                f"paid_twice={self.paid_twice} budget_overrun={self.budget_overrun:.6f} "
                f"stuck={self.stuck}")


class Cluster:
    """A Dovecot user, the fake LLM, a scratch PostgreSQL database and N worker processes."""

    def __init__(self, dovecot: DovecotServer, llm: FakeOpenAI, database_url: str,
                 models_dir: Path, *, work_dir: Path | None = None, concurrency: int = 2,
                 daily_budget: float = 0.0, account: dict[str, Any] | None = None,
                 worker: dict[str, Any] | None = None, llm_settings: dict[str, Any] | None = None,
                 route: dict[str, Any] | None = None) -> None:
        self.dovecot = dovecot
        self.llm = llm
        self.database_url = database_url
        self.user: ImapUser = dovecot.add_user("cluster")
        self.dir = work_dir or Path(tempfile.mkdtemp(prefix="mailbot-cluster-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.daily_budget = daily_budget
        self.workers: list[subprocess.Popen[bytes]] = []
        self.appended = 0
        settings = {"poll_interval": 1, "fetch_batch": 50, "processed_action": "flag",
                    "support_address": "support@shop.example.com", **(account or {})}
        self.config = self.dir / "mailbot.toml"
        sections: dict[str, dict[str, Any]] = {
            "database": {"url": database_url},
            "models": {"dir": str(models_dir), "intra_threads": 1},
            "worker": {"lease_seconds": 15, "retry_base_seconds": 0.2,
                       "retry_max_seconds": 2.0, "claim_seconds": 30,
                       "log_level": "WARNING", **(worker or {})},
            "llm": {"base_url": llm.base_url, "model": "fake-model",
                    "concurrency": concurrency, "read_timeout": 3.0, "connect_timeout": 2.0,
                    "attempts": 3, "retry_base_seconds": 0.2, "retry_max_seconds": 1.0,
                    "breaker_failures": 50, "breaker_cooldown_seconds": 2.0,
                    **(llm_settings or {})},
            "route": {"llm_classify": "never", **(route or {})},
            "cost": {"daily_budget": daily_budget},
        }
        lines = [f'data_dir = "{self.dir / "var"}"']
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
        lines.append("[[accounts]]")
        lines.extend(f"{key} = {json.dumps(value)}"
                     for key, value in self.user.account_settings(**settings).items())
        self.config.write_text("\n".join(lines) + "\n")
        self._prepare_database()

    def _prepare_database(self) -> None:
        from mailbot.config import load_config
        from mailbot.db.session import Database
        from mailbot.kb.knowledge import KnowledgeBase
        from mailbot.resources import data_dir

        config = load_config(self.config)
        database = Database(self.database_url)
        database.upgrade()
        KnowledgeBase.from_config(config, database).add([data_dir() / "kb"])
        database.dispose()

    # --- mail and workers --------------------------------------------------------------------

    def append(self, messages: list[bytes]) -> None:
        """Deliver mail to the INBOX (as the MTA would)."""
        self.user.append_many(messages)
        self.appended += len(messages)

    def start_worker(self) -> subprocess.Popen[bytes]:
        """One more `mailbot run` process."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        env.pop("MAILBOT_FAILPOINTS", None)
        log = (self.dir / f"worker-{len(self.workers)}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "mailbot", "--config", str(self.config), "run"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.workers.append(process)
        return process

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def kill(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        process.send_signal(sig)
        process.wait(timeout=90)

    def stop_all(self) -> None:
        for process in self.live_workers():
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 90
        for process in self.workers:
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # --- reading back ------------------------------------------------------------------------

    def _db(self) -> Any:
        from mailbot.db.session import Database

        return Database(self.database_url)

    def unsettled(self) -> int:
        """Messages still on their way, and outbox rows not yet done."""
        from sqlalchemy import func, select

        from mailbot.db.models import Message
        from mailbot.db.outbox import OutboxEntry

        database = self._db()
        try:
            with database.session() as session:
                rows = int(session.scalar(select(func.count()).select_from(Message)) or 0)
                waiting = int(session.scalar(
                    select(func.count()).select_from(Message)
                    .where(Message.status.not_in(SETTLED))) or 0)
                outbox = int(session.scalar(
                    select(func.count()).select_from(OutboxEntry)
                    .where(OutboxEntry.state.in_(["pending", "running"]))) or 0)
        finally:
            database.dispose()
        return (self.appended - rows) + waiting + outbox

    def wait_settled(self, timeout: float, *, poll: float = 1.0) -> bool:
        """Wait until every appended message is settled and the outbox is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.unsettled() == 0:
                    return True
            except Exception:  # noqa: BLE001 - the database may be briefly away (faults)
                pass
            time.sleep(poll)
        return False

    def tally(self) -> Tally:
        """Count what a user would check (after `wait_settled` and `stop_all`)."""
        from sqlalchemy import func, select

        from mailbot.db.drafts import DraftRecord
        from mailbot.db.llm_records import LLMRequest
        from mailbot.db.models import Event, Message

        database = self._db()
        try:
            with database.session() as session:
                rows = session.execute(select(Message.sha256, Message.status)).all()
                parses = Counter(session.scalars(
                    select(Event.message_pk).where(Event.stage == "parse")))
                tokens = list(session.scalars(
                    select(DraftRecord.token).join(Message, Message.id == DraftRecord.message_pk)
                    .where(Message.status == "drafted")))
                request_rows = session.execute(select(
                    LLMRequest.id, LLMRequest.message_pk, LLMRequest.task, LLMRequest.state,
                    LLMRequest.error)).all()
                requests = {row.id: (row.message_pk, row.task.split("@")[0])
                            for row in request_rows}
                states = {row.id: (row.state, (row.error or "")[:200]) for row in request_rows}
                spent = float(session.scalar(
                    select(func.coalesce(func.sum(Event.cost), 0.0))
                    .where(Event.stage == "llm")) or 0.0)
        finally:
            database.dispose()
        statuses = Counter(status for _, status in rows)
        by_hash = Counter(sha for sha, _ in rows)
        duplicates = sum(n - 1 for n in by_hash.values()) + sum(n - 1 for n in parses.values())
        in_folder = self._draft_tokens()
        missing = sum(1 for token in tokens if in_folder[token] != 1)
        extra = sum(max(0, n - 1) for n in in_folder.values()) + sum(
            n for token, n in in_folder.items() if token not in set(tokens))
        paid = self.llm.paid
        per_message: Counter[object] = Counter()
        keys_of: dict[object, list[str]] = {}
        for key, n in paid.items():
            # mailbot-<request>-<task>[:<step>]: a step such as ":repair" (asking the model
            # to fix an answer it got wrong) is a call of its own, not the same call again.
            found = re.fullmatch(r"mailbot-(\d+)-([^:]+)(:.+)?", key)
            request = requests.get(int(found.group(1))) if found else None
            pair = (*request, found.group(3) or "") if found and request else key
            per_message[pair] += n
            keys_of.setdefault(pair, []).append(key)
        detail = []
        for pair, n in per_message.items():
            if n <= 1:
                continue
            ids = sorted(i for i, value in requests.items()
                         if isinstance(pair, tuple) and value == pair[:2])
            detail.append({"message_task": pair, "billed": n,
                           "per_key": {k: paid[k] for k in keys_of.get(pair, [])},
                           "requests": [(i, *states[i]) for i in ids]})
        return Tally(
            messages=self.appended, ledger=len(rows), duplicates=duplicates,
            drafted=statuses["drafted"], drafts_missing=missing, drafts_extra=extra,
            llm_calls=sum(paid.values()),
            paid_twice=sum(1 for n in per_message.values() if n > 1),
            budget_overrun=max(0.0, spent - self.daily_budget) if self.daily_budget else 0.0,
            stuck=self.unsettled(), statuses=dict(statuses), paid_twice_detail=detail)

    def _draft_tokens(self) -> Counter[str]:
        from email import message_from_bytes, policy

        tokens: Counter[str] = Counter()
        with self.user.client() as client:
            if not client.folder_exists("Drafts"):
                return tokens
            client.select_folder("Drafts", readonly=True)
            uids = client.search(["NOT", "DELETED"])
            for start in range(0, len(uids), 200):
                chunk = uids[start:start + 200]
                for data in client.fetch(chunk, ["BODY.PEEK[HEADER]"]).values():
                    head = message_from_bytes(bytes(data[b"BODY[HEADER]"]), policy=policy.default)
                    tokens[str(head.get(TOKEN_HEADER, ""))] += 1
        return tokens
