"""The soak: 10,000 messages through real Dovecot and PostgreSQL with 2 workers, under faults.

Mail arrives in chunks while a driver, at random moments, SIGKILLs a worker (and starts it
again), kicks the IMAP sessions (`doveadm kick`), changes UIDVALIDITY, resets the mailbox's
UIDs for real, and terminates the database connections (`pg_terminate_backend`); the test
cloud LLM answers 429, 500, malformed JSON or not at all now and then, and a daily budget
is set below what the escalations would cost. Then the faults stop, the workers finish, and
the script counts what a user would check:

    .venv/bin/python bench/soak.py [--messages 10000] [--workers 2] [--fault-every 6]

The last line reads `messages=N ledger=N duplicates=N drafts_missing=N drafts_extra=N
paid_twice=N budget_overrun=N stuck=N`. Target: every message exactly once, exactly one
draft per drafted message, nothing paid twice, the budget kept, nothing stuck.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale import ADMIN_URL, cpu_name, models_dir  # noqa: E402
from tests.support.cluster import Cluster, corpus, drop_postgres, scratch_postgres  # noqa: E402
from tests.support.dovecot import DovecotServer, dovecot_available  # noqa: E402
from tests.support.fake_openai import FakeOpenAI  # noqa: E402
from tests.support.faults import FaultDriver, FlakyCloud, deliver_over_time  # noqa: E402


def soak(messages: int, workers: int, fault_every: float, seed: int, chunks: int,
         pause: float, settle_timeout: float, budget_share: float,
         log: object = print) -> tuple[str, dict[str, object]]:
    """Run the soak; returns the last line and the details."""
    say = log if callable(log) else print
    rng = random.Random(seed)
    mail = corpus(messages, seed=seed)
    llm = FakeOpenAI()
    cloud = FlakyCloud(random.Random(seed + 1))
    llm.default = cloud
    llm.start()
    dovecot_dir = Path(tempfile.mkdtemp(prefix="mailbot-soak-dovecot-"))
    dovecot = DovecotServer(dovecot_dir)
    dovecot.start()
    url = scratch_postgres(ADMIN_URL)
    # About a third of the mail is escalated, two calls each at about 0.0013 a call: a
    # budget of `budget_share` of that makes the last escalations go to a person.
    budget = round(messages * 0.3 * 2 * 0.0013 * budget_share, 4)
    # The cloud LLM classifies too, so each escalation is two dependent calls.
    cluster = Cluster(dovecot, llm, url, models_dir(), concurrency=2, daily_budget=budget,
                      llm_settings={"read_timeout": 2.0}, route={"llm_classify": "always"},
                      worker={"lease_seconds": 10, "claim_seconds": 20})
    driver = FaultDriver(cluster, rng, every=fault_every, log=say)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        for _ in range(workers):
            cluster.start_worker()
        driver.start()
        delivery = threading.Thread(target=deliver_over_time, args=(cluster, mail),
                                    kwargs={"chunks": chunks, "pause": pause})
        delivery.start()
        delivery.join()
        # Faults go on for a while after the last mail arrived, then stop.
        time.sleep(max(10.0, fault_every * 3))
        driver.stop()
        for _ in range(workers - len(cluster.live_workers())):
            cluster.start_worker()
        settled = cluster.wait_settled(settle_timeout, poll=2.0)
        elapsed = time.monotonic() - started
        cluster.stop_all()
        tally = cluster.tally()
        details = {"elapsed_s": round(elapsed, 1), "settled": settled,
                   "faults": dict(driver.counts), "cloud": dict(cloud.counts),
                   "statuses": tally.statuses, "budget": budget, "drafted": tally.drafted,
                   "cloud_calls_billed": tally.llm_calls}
        if tally.paid_twice_detail:
            details["paid_twice_detail (first 12)"] = tally.paid_twice_detail[:12]
        return tally.line(), details
    finally:
        if driver.is_alive():
            driver.stop()
        cluster.stop_all()
        llm.stop()
        dovecot.stop()
        drop_postgres(ADMIN_URL, url)
        shutil.rmtree(dovecot_dir, ignore_errors=True)
        if os.environ.get("MAILBOT_SOAK_KEEP") is None:
            shutil.rmtree(cluster.dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fault-every", type=float, default=6.0,
                        help="mean seconds between faults")
    parser.add_argument("--chunks", type=int, default=40, help="mail arrives in this many parts")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between parts")
    parser.add_argument("--settle-timeout", type=float, default=1800.0)
    parser.add_argument("--budget-share", type=float, default=0.8,
                        help="the daily budget as a share of what all escalations would cost")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if not dovecot_available():
        sys.exit("dovecot is not installed (apt-get install dovecot-imapd)")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.messages} messages, "
          f"{args.workers} workers, a fault every {args.fault_every:g} s on average")
    line, details = soak(args.messages, args.workers, args.fault_every, args.seed,
                         args.chunks, args.pause, args.settle_timeout, args.budget_share)
    for key, value in details.items():
        print(f"{key}: {value}")
    print(line)


if __name__ == "__main__":
    main()
