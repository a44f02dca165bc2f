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

from mailbot.audit.metrics import MetricsServer, database_health, metrics_app
from mailbot.backoff import backoff_delay
from mailbot.config import AccountSettings, Config
from mailbot.db.session import Database
from mailbot.errors import ConfigError, MailbotError
from mailbot.ingest.imap import MailboxSync, PollReport, connect
from mailbot.ingest.lease import worker_identity
from mailbot.ingest.ledger import record_poll_failure
from mailbot.pipeline.wiring import build_pipeline
from mailbot.sdnotify import Notifier, Watchdog, watchdog_interval

log = logging.getLogger(__name__)


class _SkippedPollFilter(logging.Filter):
    """A poll that outlasts its interval makes APScheduler warn at every tick that it skips
    the next run; that is how polling is meant to work here, not news for the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()

IDLE_RENEW_SECONDS = 25 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes
SEND_DRAIN_SECONDS = 15.0  # how often the worker sends replies the desk left behind


class Worker:
    """Everything `mailbot run` needs: database, pipeline, and a sync per mailbox."""

    def __init__(self, config: Config, db: Database | None = None) -> None:
        self.config = config
        self.db = db or Database(config.database_url, echo=config.database.echo)
        self.db.ensure_schema()
        self._store_prices()
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
        self._last_tick = time.monotonic()

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
        """Retrain the heads from labelled mail (a scheduled job), in a child process when
        the configuration came from a file; this worker's classifier picks up what is
        promoted at its next refresh."""
        if self.config.source:
            from mailbot.learn.child import learn_in_child

            try:
                found = learn_in_child(self.config.source)
            except MailbotError as exc:
                log.warning("learning could not run: %s", exc)
                return
            for row in found:
                log.info("learn %s: %s %s (%s)", row.get("head"), row.get("action"),
                         row.get("version") or "", row.get("reason"))
            return
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
        """Poll every mailbox once, one after the other, then send approved replies."""
        reports = []
        for sync in self.syncs:
            if self.stop.is_set():
                break
            reports.append(self.poll(sync))
        self.drain_sends()
        self.scan_outcomes()
        return reports

    def scan_outcomes(self) -> None:
        """Record what agents did with the drafts in their mail client (a scheduled job):
        replies found in Sent, drafts discarded from Drafts."""
        if not self.config.outcomes.watch_mail_client or not self.config.accounts:
            return
        from mailbot.learn.mailclient import scan_all

        try:
            reports = scan_all(self.config, self.db)
        except MailbotError as exc:
            log.warning("outcomes from the mail client could not be read: %s", exc)
            return
        for r in reports:
            if r.sent_unchanged or r.sent_edited or r.handled or r.discarded:
                log.info("%s: from the mail client: %d sent unchanged, %d sent edited, "
                         "%d handled, %d discarded", r.account, r.sent_unchanged,
                         r.sent_edited, r.handled, r.discarded)

    def drain_sends(self) -> None:
        """Send the replies approved in the review desk, and finish those a crashed desk
        process left half done (a scheduled job; the desk sends at once itself)."""
        if not any(a.smtp is not None for a in self.config.accounts):
            return
        from mailbot.outbox.send import drain_sends

        try:
            report = drain_sends(self.config, self.db, self.owner)
        except MailbotError as exc:
            log.warning("approved replies could not be sent: %s", exc)
            return
        if report.sent or report.confirmed or report.uncertain or report.failed:
            log.info("replies: %d sent, %d found already sent, %d uncertain, %d failed",
                     report.sent, report.confirmed, report.uncertain, report.failed)

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
        scheduler.add_job(self.drain_sends, "interval", id="sends", seconds=SEND_DRAIN_SECONDS,
                          next_run_time=datetime.now(UTC))
        if self.config.outcomes.watch_mail_client:
            scheduler.add_job(self.scan_outcomes, "interval", id="outcomes",
                              seconds=self.config.outcomes.scan_interval)
        scheduler.add_job(self.apply_retention, "interval", id="retention",
                          hours=self.config.retention.interval_hours,
                          next_run_time=datetime.now(UTC))
        if self.config.learn.enabled and self.config.classifier.enabled:
            # The first run one interval after the start: a restart does not retrain.
            scheduler.add_job(self.learn, "interval", id="learn",
                              hours=self.config.learn.interval_hours)
        self._install_signal_handlers()
        metrics = self._start_metrics()
        scheduler.start()
        for watcher in watchers:
            watcher.start()
        log.info("mailbot running: %d mailbox(es), worker %s", len(self.syncs), self.owner)
        notifier = Notifier()
        watchdog = Watchdog(notifier, watchdog_interval(), self.health)
        notifier.ready(f"polling {len(self.syncs)} mailbox(es)")
        try:
            main_loop(self.stop, watchdog, self._tick)
        finally:
            log.info("stopping: finishing the message in hand")
            notifier.stopping()
            if metrics is not None:
                metrics.stop()
            scheduler.shutdown(wait=True)
            for watcher in watchers:
                watcher.join(timeout=10)
            self.db.dispose()
            log.info("stopped")

    def _store_prices(self) -> None:
        # The managers' views price the all-cloud estimate with the configured [cost].
        from mailbot.audit.reports import store_prices

        try:
            with self.db.session() as session:
                store_prices(session, self.config.cost)
        except MailbotError as exc:
            log.warning("could not store the [cost] prices for the reports: %s", exc)

    def _tick(self) -> None:
        self._last_tick = time.monotonic()

    def health(self) -> tuple[bool, str]:
        """Whether the worker is healthy: its main loop turns and the database answers."""
        stalled = time.monotonic() - getattr(self, "_last_tick", time.monotonic())
        if stalled > MAIN_LOOP_STALL_SECONDS:
            return False, f"the main loop has not turned for {stalled:.0f} s"
        return database_health(self.db)()

    def _start_metrics(self) -> MetricsServer | None:
        settings = self.config.metrics
        if not settings.enabled:
            return None
        app = metrics_app(self.db, health=self.health, cache_seconds=settings.cache_seconds)
        try:
            return MetricsServer(app, settings.bind, settings.port).start()
        except OSError as exc:
            raise ConfigError(
                f"metrics.bind = {settings.bind!r}, metrics.port = {settings.port}: cannot "
                f"listen there ({exc.strerror or exc}); choose a free port or set "
                "metrics.enabled = false") from None

    def _install_signal_handlers(self) -> None:
        def _handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)


MAIN_LOOP_STALL_SECONDS = 30.0


def main_loop(stop: threading.Event, watchdog: Watchdog, tick: Callable[[], None]) -> None:
    """Turn until `stop`: note each turn (for /healthz) and feed systemd's watchdog while
    healthy. A hung loop feeds nothing, so systemd restarts the worker (`WatchdogSec=`)."""
    wait = min(1.0, watchdog.period) if watchdog.enabled else 1.0
    while True:
        tick()
        watchdog.feed()
        if stop.wait(wait):
            return


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
