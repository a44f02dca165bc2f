"""Ingest throughput: APPEND N realistic messages to a real Dovecot, then time the first sync.

Prints messages per second for mailbot's full first sync (fetch, parse, commit to the
ledger) beside a baseline measured in the same run: a bare imapclient FETCH of the same
messages with nothing done to them. Also prints the peak RSS of this process.

    .venv/bin/python bench/ingest.py [--messages 2000] [--postgres [ADMIN_URL]]

Target: at least 300 messages/s for the full sync on a 2-core machine.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailbot.config import config_from_dict  # noqa: E402
from mailbot.daemon import Worker  # noqa: E402
from mailbot.db.session import Database  # noqa: E402
from tests.support.dovecot import DovecotServer, dovecot_available  # noqa: E402
from tests.support.mail import support_email  # noqa: E402


def html_email(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Client {n} <client{n}@example.net>"
    msg["To"] = "support@shop.example.com"
    msg["Subject"] = f"Re: Your order A{n:05d} has shipped"
    msg["Message-ID"] = f"<html{n}@example.net>"
    msg["In-Reply-To"] = f"<ship{n}@shop.example.com>"
    text = (f"Hello,\n\nThe parcel for order A{n:05d} arrived damaged; the box was crushed and "
            f"the lamp inside is broken. I'd like a replacement please.\n\nRegards,\nJo\n\n"
            f"On Mon, 2 Nov 2026 at 10:00, Shop <support@shop.example.com> wrote:\n"
            f"> Your order A{n:05d} has shipped.\n> Track it here.\n")
    msg.set_content(text)
    msg.add_alternative("<html><body><p>" + text.replace("\n", "<br>") + "</p></body></html>",
                        subtype="html")
    return msg.as_bytes()


def corpus(n: int) -> list[bytes]:
    rng = random.Random(42)
    out = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.3:
            out.append(html_email(i))
        else:
            out.append(support_email(i, padding=rng.randint(0, 4000)))
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


SCRATCH_DB = "mailbot_bench_ingest"


def _scratch_postgres(admin_url: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {SCRATCH_DB}")
    return admin_url.rsplit("/", 1)[0] + "/" + SCRATCH_DB


def _drop_scratch_postgres(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--all-stages", metavar="MODELS_DIR", type=Path, default=None,
                        help="run every stage (classify, extract, retrieve, route, draft) "
                             "with the models prepared in MODELS_DIR, not just parse")
    parser.add_argument("--postgres", metavar="ADMIN_URL", nargs="?",
                        const="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="use a scratch database on this PostgreSQL server "
                             "(default: a temporary SQLite file)")
    args = parser.parse_args()
    if not dovecot_available():
        sys.exit("dovecot is not installed: apt-get install dovecot-imapd")

    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-"))
    tmp.chmod(0o755)  # Dovecot reads its users and mail as "nobody"
    server = DovecotServer(tmp / "dovecot")
    server.start()
    try:
        user = server.add_user("bench")
        messages = corpus(args.messages)
        started = time.perf_counter()
        user.append_many(messages)
        append_s = time.perf_counter() - started
        total_bytes = sum(len(m) for m in messages)
        print(f"appended {len(messages)} messages ({total_bytes / 1e6:.1f} MB) in {append_s:.1f}s")

        # Baseline: fetch every message's bytes with imapclient, nothing else.
        started = time.perf_counter()
        with user.client() as client:
            client.select_folder("INBOX", readonly=True)
            uids = client.search("ALL")
            for i in range(0, len(uids), 100):
                client.fetch(uids[i:i + 100], ["RFC822.SIZE", "INTERNALDATE"])
                client.fetch(uids[i:i + 100], ["BODY.PEEK[]"])
        baseline_s = time.perf_counter() - started

        url = _scratch_postgres(args.postgres) if args.postgres else f"sqlite:///{tmp / 'bench.db'}"
        database = Database(url)
        database.upgrade()
        # The ingest target covers fetch, parse and commit; classification has its own bench.
        settings: dict[str, object] = {"accounts": [user.account_settings()]}
        if args.all_stages:
            settings["models"] = {"dir": str(args.all_stages.resolve())}
        else:
            settings["classifier"] = {"enabled": False}
        config = config_from_dict(settings)
        worker = Worker(config, db=database)
        started = time.perf_counter()
        [report] = worker.poll_all()
        sync_s = time.perf_counter() - started
        if report.error or report.fetched != len(messages):
            sys.exit(f"sync failed: {report}")

        baseline_rate = len(messages) / baseline_s
        rate = len(messages) / sync_s
        print(f"baseline  imapclient fetch only:        {baseline_rate:8.0f} messages/s")
        work = "every stage + drafts" if args.all_stages else "fetch + parse + commit"
        print(f"mailbot   {work} ({database.engine.dialect.name}): {rate:8.0f} messages/s")
        print(f"ratio     mailbot / bare fetch:          {rate / baseline_rate:8.2f}")
        print(f"peak RSS  {peak_rss_mb():.0f} MB")
        print(f"target    >= 300 messages/s: {'met' if rate >= 300 else 'NOT met'}")
        database.dispose()
    finally:
        if args.postgres:
            _drop_scratch_postgres(args.postgres)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
