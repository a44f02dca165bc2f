"""The review desk under a full ledger: 10,000 messages, the queue and message pages timed.

Fills a fresh database (SQLite, PostgreSQL or both) with messages as the pipeline records
them (raw mail, events, facts, drafts), serves the desk with waitress in this process and
times real HTTP requests of a logged-in agent: queue pages (tabs and filters) and message
pages. The baseline is the desk's cheapest page (a static file), timed in the same run.

    python bench/web.py [--messages 10000] [--db both|sqlite|postgresql] [--requests 200]

Last line: queue_p95_ms=X message_p95_ms=Y (the slower database's figures).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from mailbot.config import config_from_dict  # noqa: E402
from mailbot.db.base import utcnow  # noqa: E402
from mailbot.db.drafts import DraftRecord  # noqa: E402
from mailbot.db.models import (  # noqa: E402
    Account,
    Event,
    Mailbox,
    Message,
    MessageFacts,
    RawMessage,
)
from mailbot.db.session import Database  # noqa: E402
from mailbot.resources import data_dir  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
INTENTS = ["order_status", "refund", "cancellation", "shipping", "billing", "complaint",
           "account_access", "technical_problem", "product_question", "feedback"]
STATUSES = (["drafted"] * 40 + ["needs_human"] * 20 + ["escalating"] * 5 + ["failed"] * 3
            + ["quarantined"] * 2 + ["done"] * 20 + ["sent"] * 10)
REASONS = ["low_confidence", "angry_high_priority", "legal_threat", "long_email",
           "repeated_contact", None, None, None]


def cpu_name() -> str:
    """The CPU's name, family and model, and how busy the machine is."""
    found: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            found.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown CPU"
    import os

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{found.get('model name', 'unknown CPU')} (family {found.get('cpu family')} "
            f"model {found.get('model')}), {os.cpu_count()} cores, load average {load}")


def fill(database: Database, count: int) -> list[int]:
    """`count` messages as the pipeline leaves them; returns the drafted ones' ids."""
    sample = (data_dir() / "samples" / "02_refund_request.eml").read_bytes()
    rng = random.Random(7)
    now = utcnow()
    with database.session() as s:
        account = Account(name="support", created_at=now)
        s.add(account)
        s.flush()
        boxes = []
        for name in ("INBOX", "Billing"):
            box = Mailbox(account_id=account.id, name=name, uidvalidity=1, last_uid=count)
            s.add(box)
            boxes.append(box)
        s.flush()
        box_ids = [b.id for b in boxes]
    drafted: list[int] = []
    batch = 1000
    for start in range(0, count, batch):
        messages, raws, events, facts, drafts = [], [], [], [], []
        for n in range(start, min(count, start + batch)):
            pk = n + 1
            status = rng.choice(STATUSES)
            intent = rng.choice(INTENTS)
            language = rng.choice(["en"] * 6 + ["de", "es", "fr"])
            reason = rng.choice(REASONS) if status != "drafted" else None
            fetched = now - timedelta(minutes=count - n)
            subject = f"Refund for returned boots - order A{n:06d}"
            messages.append({
                "id": pk, "mailbox_id": box_ids[n % 2], "uidvalidity": 1, "uid": n + 1,
                "message_id": f"bench-{n}@example.com", "sha256": f"{n:064x}",
                "size": len(sample), "subject": subject, "sender": f"c{n}@example.com",
                "fetched_at": fetched, "received_at": fetched, "status": status,
                "status_reason": f"needs a person: {reason}" if reason else None,
                "updated_at": fetched, "server_action_done": True, "attempts": 0})
            raws.append({"message_pk": pk, "raw": sample.replace(
                b"Refund for returned boots - order A10311", subject.encode())})
            classify = {"intent": {"label": intent, "confidence": 0.91, "runner_up": "refund",
                                   "runner_up_confidence": 0.05},
                        "priority": {"label": "normal", "confidence": 0.9},
                        "sentiment": {"label": "neutral", "confidence": 0.8},
                        "language": language, "out_of_scope_score": 0.2,
                        "out_of_scope": False}
            route = {"route": "human" if reason else "slm", "codes": [reason] if reason else [],
                     "reasons": [{"code": reason, "text": reason}] if reason else []}
            for stage, outcome, details, model in (
                    ("fetch", "ok", {"uid": n + 1}, None), ("parse", "ok", {}, None),
                    ("classify", "ok", classify, "all-MiniLM-L6-v2"),
                    ("extract", "ok", {"fields": {}, "missing": [], "rejected": []}, None),
                    ("route", route["route"], route, None),
                    ("settle", status, {"status": status}, None)):
                events.append({"message_pk": pk, "mailbox_id": box_ids[n % 2], "stage": stage,
                               "outcome": outcome, "details": details, "model": model,
                               "model_version": "6c947f22b415" if model else None,
                               "actor": "worker", "created_at": fetched})
            facts.append({"message_pk": pk, "data": {"extraction": {"fields": {
                "order_id": {"value": f"A{n:06d}", "type": "pattern", "span": [34, 41],
                             "confidence": 0.97}}, "missing": [], "rejected": []}},
                "updated_at": fetched})
            if status == "drafted":
                drafted.append(pk)
                drafts.append({"message_pk": pk, "token": uuid.uuid4().hex,
                               "reply_message_id": f"r{n}@example.com",
                               "template": "replies/refund.en.txt.j2", "language": language,
                               "subject": f"Re: {subject}", "body": "Hello,\n\nThank you.\n",
                               "mime": b"To: c@example.com\r\n\r\nHello", "fields": {},
                               "passages": [], "gates": {}, "model": "template",
                               "model_version": "1", "needs_review": False,
                               "review_reasons": [], "created_at": fetched})
        with database.session() as s:
            s.execute(insert(Message), messages)
            s.execute(insert(RawMessage), raws)
            s.execute(insert(Event), events)
            s.execute(insert(MessageFacts), facts)
            if drafts:
                s.execute(insert(DraftRecord), drafts)
    return drafted


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def serve(config_dict: dict[str, object], database: Database) -> str:
    from waitress import create_server

    from mailbot.web.app import create_app

    config = config_from_dict(config_dict)
    server = create_server(create_app(config, database), host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    return f"http://127.0.0.1:{server.effective_port}"  # type: ignore[union-attr]


def login(base: str) -> requests.Session:
    s = requests.Session()
    token = s.get(base + "/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    reply = s.post(base + "/login", data={"csrf_token": token, "username": "bench",
                                          "password": "bench-password"},
                   allow_redirects=False)
    assert reply.status_code == 302, reply.text[:300]
    return s


def timed(s: requests.Session, url: str) -> float:
    started = time.perf_counter()
    reply = s.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    assert reply.status_code == 200, (url, reply.status_code)
    return elapsed


def run(kind: str, url: str, directory: Path, count: int, n_requests: int
        ) -> tuple[float, float]:
    from mailbot.web.auth import add_user

    database = Database(url)
    database.upgrade()
    started = time.perf_counter()
    drafted = fill(database, count)
    print(f"{kind}: filled {count} messages in {time.perf_counter() - started:.1f} s")
    with database.session() as s:
        add_user(s, "bench", "agent", "bench-password")
    base = serve({"data_dir": str(directory), "database": {"url": url}}, database)
    s = login(base)
    rng = random.Random(3)
    queue_urls = ["/", "/?tab=human", "/?tab=failures", "/?tab=escalated",
                  "/?intent=refund", "/?tab=human&reason=legal_threat", "/?language=de",
                  "/?mailbox=1&age=24", "/?tab=human&intent=complaint&language=en"]
    for _ in range(10):  # warm-up: the first queue load indexes the ledger
        timed(s, base + "/")
        timed(s, f"{base}/messages/{rng.choice(drafted)}")
    baseline = [timed(s, base + "/static/desk.css") for _ in range(n_requests)]
    queue = [timed(s, base + rng.choice(queue_urls)) for _ in range(n_requests)]
    message = [timed(s, f"{base}/messages/{rng.choice(drafted)}") for _ in range(n_requests)]
    database.dispose()
    q, m, b = p95(queue), p95(message), p95(baseline)
    print(f"{kind}: baseline (static file) p95 {b:.1f} ms; queue p95 {q:.1f} ms "
          f"(median {statistics.median(queue):.1f}, {q / b:.1f}x baseline); message p95 "
          f"{m:.1f} ms (median {statistics.median(message):.1f}, {m / b:.1f}x baseline)")
    return q, m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--db", choices=["both", "sqlite", "postgresql"], default="both")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}; Python {platform.python_version()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="mailbot-bench-web-") as tmp:
        directory = Path(tmp)
        if args.db in ("both", "sqlite"):
            results.append(run("sqlite", f"sqlite:///{directory / 'bench.db'}", directory,
                               args.messages, args.requests))
        if args.db in ("both", "postgresql"):
            import psycopg

            name = f"mailbot_bench_web_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                results.append(run("postgresql", f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}",
                                   directory, args.messages, args.requests))
            finally:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    queue_p95 = max(q for q, _ in results)
    message_p95 = max(m for _, m in results)
    print(f"queue_p95_ms={queue_p95:.1f} message_p95_ms={message_p95:.1f}")


if __name__ == "__main__":
    main()
