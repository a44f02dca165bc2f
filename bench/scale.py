"""Scale-out: 1, 2 and 4 `mailbot run` processes on one PostgreSQL over the same mailbox.

Each run delivers the same 2,000 messages (about 30% escalated) to a fresh Dovecot user and
a fresh PostgreSQL database, starts N workers (one polls the mailbox, the others share its
pipeline work message by message), and times until every message is settled and every
draft is in the Drafts folder. The test cloud LLM answers in 500 ms; each worker keeps the
same number of cloud calls in flight. Prints throughput per worker count and the ratio to
one worker, the share of the machine's CPU each run kept busy (workers, PostgreSQL, Dovecot
and the test LLM together) with the ratio that share allows at most, then checks that
nothing was done twice:

    .venv/bin/python bench/scale.py [--messages 2000] [--latency 0.5] [--concurrency 2]

The last line reads `ratio_2=X ratio_4=Y duplicates=N`. Targets: >= 1.8x at 2 workers,
>= 3.2x at 4, 0 duplicates (ledger rows, cloud calls paid twice, drafts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailbot.engine.runtime import cpu_summary as cpu_name  # noqa: E402
from tests.support.cluster import Cluster, corpus, drop_postgres, scratch_postgres  # noqa: E402
from tests.support.dovecot import DovecotServer, dovecot_available  # noqa: E402
from tests.support.fake_openai import FakeOpenAI, Reply, default_answer  # noqa: E402

ADMIN_URL = os.environ.get("MAILBOT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def models_dir() -> Path:
    from mailbot.engine.convert import prepare_default_encoder

    path = Path(tempfile.gettempdir()) / "mailbot-bench-models"
    prepare_default_encoder(path, "all-MiniLM-L6-v2")
    return path


def cpu_busy_seconds() -> float | None:
    """Core-seconds the whole machine has spent busy since boot (Linux /proc/stat), so a
    run's CPU covers the workers, PostgreSQL, Dovecot and the test LLM server alike."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def one_run(workers: int, mail: list[bytes], args: argparse.Namespace, models: Path,
            dovecot: DovecotServer) -> tuple[float, float | None, object]:
    llm = FakeOpenAI()

    def slow(request: object) -> Reply:
        answer = default_answer(request)  # type: ignore[arg-type]
        answer.delay = args.latency
        return answer

    llm.default = slow
    llm.start()
    url = scratch_postgres(ADMIN_URL)
    cluster = Cluster(dovecot, llm, url, models, concurrency=args.concurrency)
    try:
        cluster.append(mail)
        started, busy_before = time.monotonic(), cpu_busy_seconds()
        for _ in range(workers):
            cluster.start_worker()
        settled = cluster.wait_settled(timeout=args.timeout, poll=0.5)
        elapsed = time.monotonic() - started
        busy_after = cpu_busy_seconds()
        busy = (busy_after - busy_before
                if busy_before is not None and busy_after is not None else None)
        cluster.stop_all()
        tally = cluster.tally()
        if not settled:
            print(f"  {workers} worker(s): not settled within {args.timeout:.0f} s "
                  f"({tally.stuck} left)")
        return elapsed, busy, tally
    finally:
        cluster.stop_all()
        llm.stop()
        drop_postgres(ADMIN_URL, url)
        shutil.rmtree(cluster.dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.5, help="cloud answer time, s")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="cloud calls in flight per worker")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    if not dovecot_available():
        sys.exit("dovecot is not installed (apt-get install dovecot-imapd)")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.messages} messages, cloud "
          f"answers in {args.latency:.2f} s, {args.concurrency} call(s) in flight per worker")
    models = models_dir()
    mail = corpus(args.messages)
    dovecot_dir = Path(tempfile.mkdtemp(prefix="mailbot-scale-dovecot-"))
    dovecot = DovecotServer(dovecot_dir)
    dovecot.start()
    rates: dict[int, float] = {}
    busy_share: dict[int, float] = {}
    duplicates = 0
    cores = os.cpu_count() or 1
    try:
        for count in (int(n) for n in args.workers.split(",")):
            elapsed, busy, tally = one_run(count, mail, args, models, dovecot)
            rates[count] = args.messages / elapsed
            if busy is not None:
                busy_share[count] = busy / (elapsed * cores)
            dup = tally.duplicates + tally.paid_twice + tally.drafts_extra  # type: ignore[attr-defined]
            duplicates += dup
            print(f"{count} worker(s): {elapsed:7.1f} s, {rates[count]:6.1f} messages/s, "
                  f"{tally.llm_calls} cloud calls, {tally.drafted} drafts; "  # type: ignore[attr-defined]
                  f"{tally.line()}")  # type: ignore[attr-defined]
            if count in busy_share:
                print(f"  CPU busy {busy_share[count]:.0%} of {cores} cores "
                      f"({busy / args.messages * 1000:.0f} core-ms a message, workers, "
                      "PostgreSQL, Dovecot and the test LLM together)")
    finally:
        dovecot.stop()
        shutil.rmtree(dovecot_dir, ignore_errors=True)
    base = rates.get(1)
    ratios = {n: rate / base for n, rate in rates.items()} if base else {}
    for n, ratio in sorted(ratios.items()):
        print(f"ratio {n} workers / 1 worker = {ratio:.2f}x")
    # No number of workers can use more than the machine's cores: at the least CPU a message
    # took in these runs, the cores allow this many messages a second at most.
    per_message = {n: share * cores / rates[n] for n, share in busy_share.items()}
    if base and per_message:
        least = min(per_message.values())
        print(f"CPU ceiling: at {least * 1000:.0f} core-ms a message (the least of these runs) "
              f"{cores} cores allow at most {cores / least:.1f} messages/s, "
              f"{cores / least / base:.2f}x one worker")
    print(f"ratio_2={ratios.get(2, 0):.2f} ratio_4={ratios.get(4, 0):.2f} "
          f"duplicates={duplicates}")


if __name__ == "__main__":
    main()
