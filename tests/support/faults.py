"""A fault driver for the soak: at random moments it kills workers, drops IMAP sessions,
changes UIDVALIDITY or resets the mailbox's UIDs, cuts the database connections, and makes
the cloud LLM answer 429, 500, malformed JSON or not at all."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

from tests.support.cluster import Cluster
from tests.support.fake_openai import ReceivedRequest, Reply, default_answer

LLM_FAULTS = ("429", "500", "malformed", "hang")


class FlakyCloud:
    """The fake LLM's answers: mostly good, sometimes one of `LLM_FAULTS`."""

    def __init__(self, rng: random.Random, rate: float = 0.15, delay: float = 0.05) -> None:
        self.rng = rng
        self.rate = rate
        self.delay = delay
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            fault = self.rng.choice(LLM_FAULTS) if self.rng.random() < self.rate else "ok"
            self.counts[fault] += 1
        if fault == "429":
            return Reply(status=429, headers={"Retry-After": "0.2"})
        if fault == "500":
            return Reply(status=500)
        if fault == "malformed":
            return Reply(content="{\"intent\": " if request.schema else "", delay=self.delay)
        if fault == "hang":
            return Reply(hang=True)
        answer = default_answer(request)
        answer.delay = self.delay
        return answer


class FaultDriver(threading.Thread):
    """Injects a random fault every `every` seconds (on average) until stopped."""

    def __init__(self, cluster: Cluster, rng: random.Random, *, every: float = 4.0,
                 faults: tuple[str, ...] = ("kill", "kick", "uidvalidity", "reset",
                                            "database"),
                 restart_after: float = 1.0, log: Callable[[str], None] = print) -> None:
        super().__init__(name="fault-driver", daemon=True)
        self.cluster = cluster
        self.rng = rng
        self.every = every
        self.faults = faults
        self.restart_after = restart_after
        self.log = log
        self.counts: Counter[str] = Counter()
        self._halt = threading.Event()
        self._next_validity = 1_000_000

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=120)

    def run(self) -> None:
        while not self._halt.wait(self.rng.expovariate(1.0 / self.every)):
            fault = self.rng.choice(self.faults)
            try:
                getattr(self, f"_{fault}")()
                self.counts[fault] += 1
            except Exception as exc:  # noqa: BLE001 - a fault that could not be made is noted
                self.log(f"fault {fault} not injected: {exc}")

    def _kill(self) -> None:
        live = self.cluster.live_workers()
        if not live:
            return
        victim = self.rng.choice(live)
        self.cluster.kill(victim, signal.SIGKILL)
        self._halt.wait(self.restart_after)
        self.cluster.start_worker()

    def _kick(self) -> None:
        self.cluster.user.doveadm("kick", self.cluster.user.name)

    def _uidvalidity(self) -> None:
        self._next_validity += self.rng.randint(1, 1000)
        self.cluster.user.doveadm("mailbox", "update", "-u", self.cluster.user.name,
                                  "--uid-validity", str(self._next_validity), "INBOX")

    def _reset(self) -> None:
        self.cluster.dovecot.reset_uids(self.cluster.user)

    def _database(self) -> None:
        import psycopg

        url = self.cluster.database_url.replace("postgresql+psycopg://", "postgresql://")
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def deliver_over_time(cluster: Cluster, mail: list[bytes], *, chunks: int,
                      pause: float) -> None:
    """Append the mail in `chunks` parts, `pause` seconds apart (mail keeps arriving while
    the faults land). An APPEND cut off by a fault is checked by Message-ID before it is
    made again, so each message reaches the server once."""
    import re

    size = max(1, len(mail) // chunks)
    for start in range(0, len(mail), size):
        for raw in mail[start:start + size]:
            found = re.search(rb"^Message-ID: *(<[^>]+>)", raw, re.MULTILINE | re.IGNORECASE)
            message_id = found.group(1).decode() if found else None
            for attempt in range(20):
                try:
                    with cluster.user.client() as client:
                        if attempt and message_id:
                            client.select_folder("INBOX", readonly=True)
                            if client.search(["HEADER", "Message-ID", message_id]):
                                break
                        client.append("INBOX", raw)
                    break
                except Exception:  # noqa: BLE001 - Dovecot restarting (a reset fault)
                    time.sleep(0.5 + 0.5 * attempt)
            cluster.appended += 1
        time.sleep(pause)
