"""The worker: one scheduled poll job per mailbox, optional IMAP IDLE, clean shutdown.

`mailbot run --once` and the scheduled jobs call the same `MailboxSync.poll`, so what the
tests exercise once is what the daemon does forever.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from mailbot.backoff import backoff_delay
from mailbot.config import AccountSettings, Config
from mailbot.db.session import Database
from mailbot.errors import MailbotError
from mailbot.ingest.imap import MailboxSync, PollReport, connect
from mailbot.ingest.lease import worker_identity
from mailbot.ingest.ledger import record_poll_failure
from mailbot.pipeline.wiring import build_pipeline

log = logging.getLogger(__name__)


class _SkippedPollFilter(logging.Filter):
    """A poll that outlasts its interval makes APScheduler warn at every tick that it skips
    the next run; that is how polling is meant to work here, not news for the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()

IDLE_RENEW_SECONDS = 25 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes


class Worker:
    """Everything `mailbot run` needs: database, pipeline, and a sync per mailbox."""

    def __init__(self, config: Config, db: Database | None = None) -> None:
        self.config = config
        self.db = db or Database(config.database_url, echo=config.database.echo)
        self.db.ensure_schema()
        self.stop = threading.Event()
        self.owner = worker_identity()
        built = build_pipeline(config, self.db, owner=self.owner, stop=self.stop)
        self.pipeline = built.pipeline
        self.escalations = built.escalations
        self.syncs: list[MailboxSync] = [
            MailboxSync(self.db, account, folder, self.pipeline, config.worker,
                        owner=self.owner, stop=self.stop, escalations=self.escalations)
            for account in config.accounts
            for folder in account.mailboxes
        ]
        # Set by an IDLE watcher when mail arrives; a poll already running when it does
        # polls once more, so the wake-up is never lost.
        self.wake: dict[int, threading.Event] = {id(s): threading.Event() for s in self.syncs}

    def poll(self, sync: MailboxSync) -> PollReport:
        """Poll one mailbox (again, while IDLE reports new mail during the poll); an
        unexpected error is recorded and never stops the others."""
        wake = self.wake[id(sync)]
        for _ in range(100):
            wake.clear()
            report = self._poll_once(sync)
            if not wake.is_set() or self.stop.is_set() or report.error:
                return report
            log.info("%s/%s: new mail arrived during the poll; polling again",
                     sync.account.name, sync.folder)
        return report

    def _poll_once(self, sync: MailboxSync) -> PollReport:
        try:
            return sync.poll()
        except MailbotError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - isolation: record it, keep the daemon alive
            log.exception("unexpected error polling %s/%s", sync.account.name, sync.folder)
            error = f"unexpected error: {type(exc).__name__}: {exc}"
        try:
            with self.db.session() as session:
                record_poll_failure(session, sync.mailbox_id, error)
        except MailbotError:
            log.error("could not record the failure of %s/%s: %s",
                      sync.account.name, sync.folder, error)
        return PollReport(sync.account.name, sync.folder, error=error)

    def apply_retention(self) -> None:
        """Remove personal data past the retention settings (a scheduled job)."""
        from mailbot.audit.retention import apply_retention

        try:
            with self.db.session() as session:
                report = apply_retention(session, self.config.retention)
        except MailbotError as exc:
            log.warning("retention could not run: %s", exc)
            return
        if report.raw or report.messages:
            log.info("retention: %d raw message(s) deleted, %d message(s) scrubbed",
                     report.raw, report.messages)

    def learn(self) -> None:
        """Retrain the heads from labelled mail (a scheduled job); the classifier in this
        worker picks up what is promoted at its next refresh."""
        from mailbot.classify.stage import ClassifyStage
        from mailbot.learn.loop import run_learning

        encoder = next((s.classifier.encoder for s in self.pipeline.stages
                        if isinstance(s, ClassifyStage)), None)
        try:
            outcomes = run_learning(self.config, self.db, encoder)
        except MailbotError as exc:
            log.warning("learning could not run: %s", exc)
            return
        for outcome in outcomes:
            log.info("learn %s: %s %s (%s)", outcome.name, outcome.action,
                     outcome.version or "", outcome.reason)

    def poll_all(self) -> list[PollReport]:
        """Poll every mailbox once, one after the other."""
        reports = []
        for sync in self.syncs:
            if self.stop.is_set():
                break
            reports.append(self.poll(sync))
        return reports

    def run_forever(self) -> None:
        """Schedule the polls and IDLE watchers until SIGTERM or SIGINT."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        logging.getLogger("apscheduler.scheduler").addFilter(_SkippedPollFilter())
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max(1, min(8, len(self.syncs))))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        watchers = []
        for index, sync in enumerate(self.syncs):
            job_id = f"poll-{index}-{sync.account.name}-{sync.folder}"
            scheduler.add_job(self.poll, "interval", args=[sync], id=job_id,
                              seconds=sync.account.poll_interval,
                              next_run_time=datetime.now(UTC))
            if sync.account.idle:
                watchers.append(IdleWatcher(sync.account, sync.folder, self.stop,
                                            _trigger(scheduler, job_id, self.wake[id(sync)])))
        scheduler.add_job(self.apply_retention, "interval", id="retention",
                          hours=self.config.retention.interval_hours,
                          next_run_time=datetime.now(UTC))
        if self.config.learn.enabled and self.config.classifier.enabled:
            # The first run one interval after the start: a restart does not retrain.
            scheduler.add_job(self.learn, "interval", id="learn",
                              hours=self.config.learn.interval_hours)
        self._install_signal_handlers()
        scheduler.start()
        for watcher in watchers:
            watcher.start()
        log.info("mailbot running: %d mailbox(es), worker %s", len(self.syncs), self.owner)
        try:
            while not self.stop.wait(1.0):
                pass
        finally:
            log.info("stopping: finishing the message in hand")
            scheduler.shutdown(wait=True)
            for watcher in watchers:
                watcher.join(timeout=10)
            self.db.dispose()
            log.info("stopped")

    def _install_signal_handlers(self) -> None:
        def _handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)


def _trigger(scheduler: object, job_id: str, wake: threading.Event) -> Callable[[], None]:
    def run_now() -> None:
        wake.set()  # a poll running now polls again when it ends
        try:
            scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the scheduler may be shutting down
            log.debug("could not trigger %s", job_id)

    return run_now


class IdleWatcher(threading.Thread):
    """Waits in IMAP IDLE and triggers the mailbox's poll as soon as new mail arrives.

    Polling stays the source of truth: if IDLE fails, the watcher backs off and the
    regular poll interval still picks everything up.
    """

    def __init__(
        self,
        account: AccountSettings,
        folder: str,
        stop: threading.Event,
        trigger: Callable[[], None],
        *,
        check_seconds: float = 5.0,
    ) -> None:
        super().__init__(name=f"idle-{account.name}-{folder}", daemon=True)
        self.account = account
        self.folder = folder
        self.stop = stop
        self.trigger = trigger
        self.check_seconds = check_seconds

    def run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            try:
                self._watch()
                attempt = 0
            except Exception as exc:  # noqa: BLE001 - IDLE is an optimisation; keep polling
                delay = backoff_delay(attempt, base=5.0, cap=300.0)
                log.info("IDLE on %s/%s failed (%s); retrying in %.0fs",
                         self.account.name, self.folder, exc, delay)
                attempt += 1
                self.stop.wait(delay)

    def _watch(self) -> None:
        client = connect(self.account, self.account.resolve_password())
        try:
            if not client.has_capability("IDLE"):
                log.info("%s does not support IDLE; polling only", self.account.host)
                self.stop.wait()
                return
            client.select_folder(self.folder, readonly=True)
            client.idle()
            started = time.monotonic()
            while not self.stop.is_set():
                responses = client.idle_check(timeout=self.check_seconds)
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    self.trigger()
                if time.monotonic() - started > IDLE_RENEW_SECONDS:
                    client.idle_done()
                    client.idle()
                    started = time.monotonic()
            client.idle_done()
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone already
                client.logout()
