"""The pipeline runner: claims messages, runs the stages over them, and records each one.

The order of work is what makes it safe and lets several workers share one database:

1. claim: messages waiting in the ledger are claimed in one short transaction (a claim
   expires if its worker dies; PostgreSQL skips rows another worker is claiming);
2. run: the stages run over the group in memory, with no transaction open (they are pure:
   cases in, steps out; model batches over the whole group);
3. record: one transaction for the group, a savepoint per message, each fenced by its claim.
   A message whose stages crashed, or whose rows the database refused, is isolated: retried
   later up to `worker.max_attempts` times, then quarantined with the reason, while the
   rest of the group commits.

Nothing here touches the network: the cloud LLM step (`mailbot.llm.escalate`) and the
outbox's drainer do that, each on its own.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mailbot.audit.events import record_event
from mailbot.backoff import backoff_delay
from mailbot.db.base import utcnow
from mailbot.db.models import Account, Mailbox, Message, MessageStatus, RawMessage
from mailbot.db.session import Database
from mailbot.errors import MailbotError, TransientError
from mailbot.failpoints import failpoint
from mailbot.outbox.queue import enqueue_server_action
from mailbot.pipeline.case import Case, Stage, Step
from mailbot.pipeline.context import with_thread_history
from mailbot.pipeline.record import Recorder
from mailbot.route.decision import RouteDecision
from mailbot.route.outcome import Settlement

log = logging.getLogger(__name__)

_CRASHED = "crashed"  # the outcome of a step whose stage raised


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """How the runner claims, groups and retries (from `[worker]`)."""

    group_size: int = 20
    max_attempts: int = 3
    claim_seconds: float = 300.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0

    @classmethod
    def from_config(cls, config: Any) -> PipelineSettings:
        worker = config.worker
        return cls(worker.group_size, worker.max_attempts, worker.claim_seconds,
                   worker.retry_base_seconds, worker.retry_max_seconds)


@dataclass(frozen=True, slots=True)
class ProcessedMessage:
    """The outcome of one message's pass through the pipeline."""

    message_pk: int
    status: str
    reason: str | None
    case: Case | None = None


def run_stages(stages: Sequence[Stage], cases: Sequence[Case],
               enrich: Callable[[list[Case]], list[Case]] | None = None) -> list[list[Step]]:
    """Run the stages over several cases in memory, batching where a stage can.

    `enrich` runs after the parse stage (the runner reads the thread history there). A stage
    that raises for a message ends that message's pass with a "crashed" step.
    """
    steps: list[list[Step]] = [[] for _ in cases]
    current = list(cases)
    active = list(range(len(cases)))
    for stage in stages:
        if not active:
            break
        timed = _run_stage(stage, [current[i] for i in active])
        still_active = []
        for index, step in zip(active, timed, strict=True):
            steps[index].append(step)
            current[index] = step.case
            if not step.stop:
                still_active.append(index)
        active = still_active
        if stage.name == "parse" and enrich is not None and active:
            enriched = enrich([current[i] for i in active])
            for index, case in zip(active, enriched, strict=True):
                current[index] = case
    return steps


def _run_stage(stage: Stage, cases: list[Case]) -> list[Step]:
    run_many = getattr(stage, "run_many", None)
    if run_many is not None and len(cases) > 1:
        started = time.perf_counter()
        try:
            results = run_many(cases)
        except TransientError:
            raise
        except Exception:  # noqa: BLE001 - find the message at fault one by one
            log.warning("batch of %s failed; running its messages one by one", stage.name)
        else:
            share = (time.perf_counter() - started) * 1000.0 / len(cases)
            return [replace(step, stage=stage.name, latency_ms=share) for step in results]
    return [_run_one(stage, case) for case in cases]


def _run_one(stage: Stage, case: Case) -> Step:
    started = time.perf_counter()
    try:
        step = stage.run(case)
    except TransientError:
        raise
    except Exception as exc:  # a bug or bad data in one stage fails only this message
        log.exception("stage %s failed on message %s", stage.name, case.message_pk)
        step = Step(case, _CRASHED, stop=True,
                    reason=f"{stage.name} failed: {type(exc).__name__}: {exc}",
                    details={"traceback": traceback.format_exc(limit=20)})
    return replace(step, stage=stage.name, latency_ms=(time.perf_counter() - started) * 1000.0)


class Pipeline:
    """Runs the configured stages over messages waiting in the ledger."""

    def __init__(
        self,
        db: Database,
        stages: Sequence[Stage],
        *,
        recorder: Recorder | None = None,
        settings: PipelineSettings | None = None,
        owner: str | None = None,
    ) -> None:
        from mailbot.ingest.lease import worker_identity

        self.db = db
        self.stages: list[Stage] = list(stages)
        self.recorder = recorder or Recorder(None)
        self.settings = settings or PipelineSettings()
        self.owner = owner or worker_identity()
        # Cases waiting for the cloud LLM, kept so that finishing them needs no model; a
        # case not here (after a restart) is rebuilt from the ledger.
        self._escalated: OrderedDict[int, Case] = OrderedDict()
        self._escalated_lock = threading.Lock()

    @property
    def group_size(self) -> int:
        return self.settings.group_size

    # --- claiming ----------------------------------------------------------------------------

    def claim(self, mailbox_id: int | None = None, limit: int | None = None,
              exclude: Sequence[int] = ()) -> list[int]:
        """Claim up to `limit` waiting messages (oldest first) for this worker."""
        now = utcnow()
        until = now + timedelta(seconds=self.settings.claim_seconds)
        due = (select(Message.id)
               .where(Message.status == MessageStatus.FETCHED,
                      or_(Message.claimed_by.is_(None), Message.claimed_by == self.owner,
                          Message.claim_expires_at < now),
                      or_(Message.retry_at.is_(None), Message.retry_at <= now)))
        if mailbox_id is not None:
            due = due.where(Message.mailbox_id == mailbox_id)
        if exclude:
            due = due.where(Message.id.not_in(list(exclude)))
        due = due.order_by(Message.id).limit(limit or self.group_size)
        with self.db.session() as session:
            # One UPDATE over a locked-and-skipped subquery: two workers never claim the same
            # message, and on SQLite the statement takes the write lock first.
            session.execute(
                update(Message)
                .where(Message.id.in_(due.with_for_update(skip_locked=True).scalar_subquery()))
                .values(claimed_by=self.owner, claim_expires_at=until),
                execution_options={"synchronize_session": False},
            )
            return list(session.scalars(
                select(Message.id).where(Message.claimed_by == self.owner,
                                         Message.claim_expires_at == until,
                                         Message.status == MessageStatus.FETCHED)
                .order_by(Message.id)))

    def process_pending(
        self,
        mailbox_id: int | None = None,
        *,
        stop: threading.Event | None = None,
        on_message: Callable[[ProcessedMessage], None] | None = None,
        check: Callable[[], None] | None = None,
        at_most: int | None = None,
    ) -> int:
        """Process every message still waiting (of one mailbox, or all); returns the count.

        Stops between groups when `stop` is set, so SIGTERM finishes the messages in hand
        and commits them; `check` runs before each group (the poll's lease check). With
        `at_most`, stops after about that many (whole groups), leaving the rest waiting.
        """
        count = 0
        failed: list[int] = []  # retried at a later call, not again in this one
        self.release_dead_claims()
        while not (stop and stop.is_set()) and (at_most is None or count < at_most):
            if check is not None:
                check()
            claimed = self.claim(mailbox_id, exclude=failed)
            if not claimed:
                break
            for processed in self.process_claimed(claimed):
                if processed.status == MessageStatus.FETCHED:
                    failed.append(processed.message_pk)
                    continue
                count += 1
                if on_message:
                    on_message(processed)
        return count

    def release_dead_claims(self) -> int:
        """Free the claims of workers that died on this machine (a restart after a crash
        goes on at once instead of waiting for their claims to expire)."""
        from mailbot.ingest.lease import holder_is_dead

        with self.db.session() as session:
            holders = session.scalars(
                select(Message.claimed_by).where(Message.status == MessageStatus.FETCHED,
                                                 Message.claimed_by.is_not(None),
                                                 Message.claimed_by != self.owner)
                .distinct()).all()
            dead = [h for h in holders if h and holder_is_dead(h)]
            if dead:
                session.execute(update(Message).where(Message.claimed_by.in_(dead))
                                .values(claimed_by=None, claim_expires_at=None))
        return len(dead)

    def process(self, message_pk: int) -> ProcessedMessage:
        """Claim and process one message (tests, `mailbot draft` of a stored message)."""
        with self.db.session() as session:
            session.execute(update(Message).where(Message.id == message_pk)
                            .values(claimed_by=self.owner,
                                    claim_expires_at=utcnow() + timedelta(
                                        seconds=self.settings.claim_seconds)))
        [processed] = self.process_claimed([message_pk])
        return processed

    # --- running and recording ---------------------------------------------------------------

    def process_claimed(self, message_pks: Sequence[int]) -> list[ProcessedMessage]:
        """Run the stages over claimed messages and record each (see the module docstring)."""
        cases, missing = self._load(message_pks)
        results = run_stages(self.stages, cases, self._enrich) if cases else []
        done = self._commit(list(zip(cases, results, strict=True)), missing)
        failpoint("pipeline.after_commit")
        return done

    def _load(self, message_pks: Sequence[int]) -> tuple[list[Case], list[int]]:
        with self.db.session() as session:
            rows = session.execute(
                select(Message.id, RawMessage.raw, Account.name, Mailbox.name)
                .join(Mailbox, Mailbox.id == Message.mailbox_id)
                .join(Account, Account.id == Mailbox.account_id)
                .outerjoin(RawMessage, RawMessage.message_pk == Message.id)
                .where(Message.id.in_(list(message_pks)))
                .order_by(Message.id)
            ).all()
        cases = [Case(message_pk=pk, raw=raw, account=account, mailbox=mailbox)
                 for pk, raw, account, mailbox in rows if raw is not None]
        missing = [pk for pk, raw, _, _ in rows if raw is None]
        return cases, missing

    def _enrich(self, cases: list[Case]) -> list[Case]:
        with self.db.session() as session:
            return with_thread_history(session, cases)

    def _commit(self, results: list[tuple[Case, list[Step]]], missing: list[int]
                ) -> list[ProcessedMessage]:
        try:
            return self._commit_group(results, missing)
        except TransientError:
            raise
        except (SQLAlchemyError, MailbotError) as exc:
            if len(results) + len(missing) <= 1:
                raise
            # The group's commit itself failed: commit each message on its own, so only the
            # one at fault is retried.
            log.warning("a group commit failed (%s); committing its messages one by one", exc)
            done = []
            for pair in results:
                done.extend(self._commit_alone(pair))
            for pk in missing:
                done.extend(self._commit_group([], [pk]))
            return done

    def _commit_alone(self, pair: tuple[Case, list[Step]]) -> list[ProcessedMessage]:
        try:
            return self._commit_group([pair], [])
        except TransientError:
            raise
        except (SQLAlchemyError, MailbotError) as exc:
            case = pair[0]
            with self.db.session() as session:
                message = self._fenced(session, case.message_pk)
                if message is None:
                    return []
                self._attempt_failed(session, message, f"could not be recorded: {_short(exc)}")
                return [ProcessedMessage(message.id, message.status, message.status_reason)]

    def _commit_group(self, results: list[tuple[Case, list[Step]]], missing: list[int]
                      ) -> list[ProcessedMessage]:
        done: list[ProcessedMessage] = []
        refused: list[tuple[int, str]] = []
        with self.db.session() as session:
            for pk in missing:
                message = self._fenced(session, pk)
                if message is not None:
                    self._fail_missing(session, message)
                    done.append(ProcessedMessage(pk, message.status, message.status_reason))
            for case, steps in results:
                try:
                    with session.begin_nested():
                        processed = self._record(session, case, steps)
                except TransientError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the database refused its rows
                    log.warning("message %s could not be recorded: %s", case.message_pk, exc)
                    refused.append((case.message_pk, _short(exc)))
                    continue
                if processed is not None:
                    done.append(processed)
            for pk, error in refused:
                message = self._fenced(session, pk)
                if message is not None:
                    self._attempt_failed(session, message, f"could not be recorded: {error}")
                    done.append(ProcessedMessage(pk, message.status, message.status_reason))
        return done

    def _record(self, session: Session, case: Case, steps: list[Step]) -> ProcessedMessage | None:
        message = self._fenced(session, case.message_pk)
        if message is None:
            log.info("message %s was taken over by another worker; dropping this pass",
                     case.message_pk)
            return None
        final = steps[-1].case if steps else case
        if steps and steps[-1].outcome == _CRASHED:
            crash = steps[-1]
            self._attempt_failed(session, message, crash.reason or "a stage failed",
                                 details=dict(crash.details))
            return ProcessedMessage(message.id, message.status, message.status_reason, final)
        recorded = [s for s in steps if s.outcome != "not_needed"]
        settlement = self.recorder.commit_case(session, message, final, recorded)
        session.flush()
        if settlement.status == MessageStatus.ESCALATING:
            self._remember(final)
        return ProcessedMessage(message.id, message.status, message.status_reason, final)

    def _fenced(self, session: Session, message_pk: int) -> Message | None:
        """The message row, locked, if this worker's claim on it still holds."""
        return session.scalars(
            select(Message).where(Message.id == message_pk, Message.claimed_by == self.owner,
                                  Message.status == MessageStatus.FETCHED)
            .with_for_update()
        ).first()

    def _fail_missing(self, session: Session, message: Message) -> None:
        message.status = MessageStatus.FAILED
        message.status_reason = "raw message missing from the ledger"
        message.claimed_by = None
        record_event(session, "pipeline", "error", message_pk=message.id,
                     mailbox_id=message.mailbox_id, details={"error": message.status_reason})
        self._server_action(session, message)

    def _attempt_failed(self, session: Session, message: Message, error: str, *,
                        details: dict[str, Any] | None = None) -> None:
        """Count a failed attempt: retry later with backoff, or quarantine after the last."""
        message.attempts = (message.attempts or 0) + 1
        message.last_error = error
        message.claimed_by = None
        message.claim_expires_at = None
        message.updated_at = utcnow()
        attempts, limit = message.attempts, self.settings.max_attempts
        if attempts >= limit:
            message.status = MessageStatus.QUARANTINED
            message.status_reason = (f"quarantined after {attempts} failed attempt(s): {error}; "
                                     "handle it by hand")
            outcome = "quarantined"
            log.error("message %s quarantined: %s", message.id, error)
        else:
            delay = backoff_delay(attempts - 1, base=self.settings.retry_base_seconds,
                                  cap=self.settings.retry_max_seconds)
            message.retry_at = utcnow() + timedelta(seconds=delay)
            outcome = "retry"
        record_event(session, "pipeline", outcome, message_pk=message.id,
                     mailbox_id=message.mailbox_id,
                     details={"error": error, "attempt": attempts, "max_attempts": limit,
                              **(details or {})})
        if message.status == MessageStatus.QUARANTINED:
            self._server_action(session, message)

    def _server_action(self, session: Session, message: Message) -> None:
        account = self.recorder.account_of(session, message)
        if account is not None:
            enqueue_server_action(session, message, account)

    # --- what the cloud LLM step needs (mailbot.llm.escalate.EscalationHost) ----------------

    def _remember(self, case: Case) -> None:
        with self._escalated_lock:
            self._escalated[case.message_pk] = case
            while len(self._escalated) > 10_000:
                self._escalated.popitem(last=False)

    def case_for(self, message_pk: int, decision: RouteDecision) -> Case:
        """The case of an escalated message: kept from its local pass, or rebuilt."""
        with self._escalated_lock:
            kept = self._escalated.pop(message_pk, None)
        if kept is not None:
            return kept
        cases, _ = self._load([message_pk])
        if not cases:
            return Case(message_pk=message_pk, raw=b"", decision=decision)
        local = [s for s in self.stages if s.name not in ("generate", "route", "draft")]
        steps = run_stages(local, cases, self._enrich)[0]
        return (steps[-1].case if steps else cases[0]).with_(decision=decision)

    def plan_escalation(self, message_pk: int, decision: RouteDecision
                        ) -> tuple[str, dict[str, Any]]:
        """The first cloud request of a message an agent escalated from the desk (its local
        stages run again; call it outside any transaction)."""
        planner = self.recorder.planner
        if planner is None:
            raise MailbotError("no cloud LLM step is configured")
        return planner(self.case_for(message_pk, decision))

    def compose(self, case: Case) -> list[Step]:
        """Draft the reply of an answered escalation (the compose stage alone)."""
        composer = [s for s in self.stages if s.name == "draft"]
        if case.message is None or not composer:
            return []
        return run_stages(composer, [case])[0]

    def commit_outcome(self, session: Session, case: Case, steps: Sequence[Step]
                       ) -> Settlement | None:
        """Settle an escalated message in the caller's transaction (answered or failed)."""
        message = session.scalars(
            select(Message).where(Message.id == case.message_pk,
                                  Message.status == MessageStatus.ESCALATING)
            .with_for_update()
        ).first()
        if message is None:
            return None
        recorded = [s for s in steps if s.outcome not in ("not_needed", _CRASHED)]
        if any(s.outcome == _CRASHED for s in steps):
            case = case.with_(no_draft="drafting the cloud LLM's reply failed")
        return self.recorder.commit_case(session, message, case, recorded)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


@dataclass(frozen=True, slots=True)
class DryRun:
    """What the stages made of one email, in memory only."""

    steps: tuple[Step, ...]

    @property
    def case(self) -> Case:
        """The case as the last stage left it."""
        return self.steps[-1].case

    def step(self, name: str) -> Step | None:
        """The step of the named stage, if it ran."""
        return next((s for s in self.steps if s.stage == name), None)


def dry_run(stages: Sequence[Stage], raw: bytes, *, account: str | None = None) -> DryRun:
    """Run the stages over raw bytes without any database (for `mailbot draft` and tests)."""
    [steps] = run_stages(stages, [Case(message_pk=0, raw=raw, account=account)])
    return DryRun(tuple(steps))


__all__ = [
    "DryRun",
    "Pipeline",
    "PipelineSettings",
    "ProcessedMessage",
    "dry_run",
    "run_stages",
]
