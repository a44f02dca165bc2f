"""Prometheus metrics and a health check, served by the worker (`[metrics]`) or any WSGI app.

Two kinds of figures:

- counted in this process as the audit log is written (`record_event` observes each event):
  events by stage and outcome, stage latencies, escalations and cloud LLM errors;
- read from the database at scrape time (cached for a few seconds), so every process that
  serves them shows the same: messages waiting in each status (the queue), drafts awaiting
  review, the outbox, and each mailbox's last successful poll.

`metrics_app(...)` is a WSGI app with `/metrics` and `/healthz`; the review desk can mount
it as is. `MetricsServer` serves it on a small HTTP listener in the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

if TYPE_CHECKING:
    from mailbot.db.session import Database

log = logging.getLogger(__name__)

# Seconds; stages run from under a millisecond (routing) to tens of seconds (a cloud call).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
WAITING_STATUSES = ("fetched", "parsed", "classified", "routed", "escalating")

EVENTS = Counter("mailbot_events", "Audit events written, by stage and outcome (one per "
                 "message and stage).", ["stage", "outcome"])
STAGE_LATENCY = Histogram("mailbot_stage_latency_seconds", "How long each stage took.",
                          ["stage"], buckets=LATENCY_BUCKETS)
ESCALATIONS = Counter("mailbot_escalations", "Messages the router sent to the cloud LLM or "
                      "to a person, by route.", ["route"])
HANDOFFS = Counter("mailbot_handoffs", "Messages on a drafting route handed to a person, by "
                   "reason.", ["reason"])
LLM_ERRORS = Counter("mailbot_llm_errors", "Cloud LLM calls that failed, by outcome "
                     "(unavailable, rejected, invalid).", ["outcome"])


def observe_event(stage: str, outcome: str, latency_ms: float | None,
                  details: dict[str, Any]) -> None:
    """Count one audit event (called by `record_event`; never raises)."""
    try:
        EVENTS.labels(stage, outcome).inc()
        if latency_ms is not None and latency_ms >= 0:
            STAGE_LATENCY.labels(stage).observe(latency_ms / 1000.0)
        if stage == "route" and outcome in ("llm", "human"):
            ESCALATIONS.labels(outcome).inc()
        elif stage == "settle" and details.get("handoff"):
            HANDOFFS.labels(str(details["handoff"])).inc()
        elif stage == "llm" and outcome != "ok":
            LLM_ERRORS.labels(outcome).inc()
    except Exception:  # noqa: BLE001 - metrics must never break the audit log
        log.debug("could not count an event", exc_info=True)


class DatabaseCollector(Collector):
    """Gauges read from the audit database at scrape time, cached `cache_seconds`."""

    def __init__(self, database: Database, cache_seconds: float = 5.0) -> None:
        self.database = database
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Any]] | None = None
        self.last_error: str | None = None

    def collect(self) -> Iterator[Any]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                self._cached = (now, self._read())
            yield from self._cached[1]

    def _read(self) -> list[Any]:
        from sqlalchemy import func, select

        from mailbot.db.drafts import DraftRecord
        from mailbot.db.llm_records import LLMRequest
        from mailbot.db.models import Account, Mailbox, Message
        from mailbot.db.outbox import OutboxEntry
        from mailbot.db.outcomes import DraftOutcome

        up = GaugeMetricFamily("mailbot_database_up", "1 when the audit database answered the "
                               "last scrape.")
        try:
            with self.database.session() as session:
                statuses = dict(session.execute(
                    select(Message.status, func.count()).group_by(Message.status)).all())
                awaiting = session.scalar(
                    select(func.count()).select_from(DraftRecord)
                    .join(Message, Message.id == DraftRecord.message_pk)
                    .where(Message.status == "drafted", ~select(DraftOutcome.id)
                           .where(DraftOutcome.message_pk == DraftRecord.message_pk)
                           .exists()))
                outbox = dict(session.execute(
                    select(OutboxEntry.state, func.count()).group_by(OutboxEntry.state)).all())
                in_flight = session.scalar(select(func.count()).select_from(LLMRequest)
                                           .where(LLMRequest.state.in_(["pending", "sent"])))
                boxes = session.execute(
                    select(Account.name, Mailbox.name, Mailbox.last_success_at,
                           Mailbox.last_poll_at, Mailbox.consecutive_failures)
                    .join(Account, Account.id == Mailbox.account_id)).all()
        except Exception as exc:  # noqa: BLE001 - a scrape reports the outage, never fails
            self.last_error = str(exc).splitlines()[0]
            log.warning("metrics: the database did not answer: %s", self.last_error)
            up.add_metric([], 0)
            return [up]
        self.last_error = None
        up.add_metric([], 1)
        queue = GaugeMetricFamily("mailbot_queue_messages", "Messages waiting for the pipeline "
                                  "or the cloud LLM, by status.", labels=["status"])
        for status in WAITING_STATUSES:
            queue.add_metric([status], statuses.get(status, 0))
        by_status = GaugeMetricFamily("mailbot_messages", "Messages in the ledger, by status.",
                                      labels=["status"])
        for status, count in sorted(statuses.items()):
            by_status.add_metric([status], count)
        review = GaugeMetricFamily("mailbot_drafts_awaiting_review", "Drafts no agent has sent, "
                                   "edited or rejected yet.")
        review.add_metric([], awaiting or 0)
        needs_human = GaugeMetricFamily("mailbot_needs_human_messages", "Messages waiting for a "
                                        "person (no draft).")
        needs_human.add_metric([], statuses.get("needs_human", 0))
        pending = GaugeMetricFamily("mailbot_outbox_entries", "Server-side effects, by state.",
                                    labels=["state"])
        for state, count in sorted(outbox.items()):
            pending.add_metric([state], count)
        llm = GaugeMetricFamily("mailbot_llm_requests_open", "Cloud LLM requests pending or in "
                                "flight.")
        llm.add_metric([], in_flight or 0)
        success = GaugeMetricFamily("mailbot_mailbox_last_success_timestamp_seconds",
                                    "When each mailbox was last polled without error (Unix "
                                    "time; 0 = never).", labels=["account", "mailbox"])
        failures = GaugeMetricFamily("mailbot_mailbox_consecutive_failures",
                                     "Failed polls in a row, per mailbox.",
                                     labels=["account", "mailbox"])
        for account, mailbox, last_success, _last_poll, failed in boxes:
            success.add_metric([account, mailbox],
                               last_success.timestamp() if last_success else 0.0)
            failures.add_metric([account, mailbox], failed or 0)
        return [up, queue, by_status, review, needs_human, pending, llm, success, failures]


class _Scrape:
    """What one scrape collects: this process's counters and the database's gauges."""

    def __init__(self, collectors: Iterable[CollectorRegistry | Collector]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Any]:
        for collector in self.collectors:
            yield from collector.collect()


Health = Callable[[], tuple[bool, str]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def database_health(database: Database) -> Health:
    """A health check: the database answers `SELECT 1`."""
    from sqlalchemy import text

    def check() -> tuple[bool, str]:
        try:
            with database.session() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001
            return False, f"database unavailable: {str(exc).splitlines()[0]}"
        return True, "ok"

    return check


def metrics_app(database: Database | None = None, *, health: Health | None = None,
                registry: CollectorRegistry = REGISTRY, cache_seconds: float = 5.0) -> WSGIApp:
    """A WSGI app: `GET /metrics` (Prometheus text format) and `GET /healthz` (200 or 503)."""
    collectors: list[CollectorRegistry | Collector] = [registry]
    if database is not None:
        collectors.append(DatabaseCollector(database, cache_seconds))
        health = health or database_health(database)
    scrape = _Scrape(collectors)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain"),
                                                      ("Allow", "GET, HEAD")])
            return [b"only GET\n"]
        if path.endswith("/metrics"):
            body = generate_latest(scrape)  # type: ignore[arg-type]
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if path.endswith("/healthz"):
            ok, problem = health() if health is not None else (True, "ok")
            body = (f"{'ok' if ok else 'unhealthy'}: {problem}\n" if not ok else "ok\n").encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("metrics: " + format, *args)


class MetricsServer:
    """The worker's small HTTP listener for `/metrics` and `/healthz`, in a daemon thread."""

    def __init__(self, app: WSGIApp, bind: str, port: int) -> None:
        self.server: WSGIServer = make_server(bind, port, app, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics",
                                       daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> MetricsServer:
        self.thread.start()
        log.info("metrics on http://%s:%d/metrics", self.server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
