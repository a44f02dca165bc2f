"""The pipeline runner: the one place that orders the stages and audits each step.

A stage is a small object with a `name` and a `run(item)` that takes what earlier stages
produced and returns a `StageResult`; it touches neither the network nor the database.
The runner loads the raw message, runs the stages in order, and commits the audit events
and the new status in one transaction per message, so a crash mid-message leaves nothing
half-recorded and the message is simply processed again.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select

from mailbot.db.base import utcnow
from mailbot.db.models import Account, Mailbox, Message, MessageStatus, RawMessage
from mailbot.db.session import Database
from mailbot.errors import TransientError
from mailbot.failpoints import failpoint
from mailbot.ingest.ledger import pending_messages, record_event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StageResult:
    """What one stage did to one message."""

    outcome: str  # "ok", "skipped", "error", ...
    value: Any = None  # handed to later stages under the stage's name
    status: MessageStatus | None = None  # the message's new status, if it changes
    reason: str | None = None  # why, for a skip or an error (kept on the message)
    details: Mapping[str, Any] = field(default_factory=dict)
    stop: bool = False  # later stages do not run
    model: str | None = None
    model_version: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None
    # Ledger columns to fill in from what the stage learnt (subject, sender, ...).
    message_updates: Mapping[str, Any] = field(default_factory=dict)
    # New rows for the stage's own tables (drafts, ...); the runner sets their message_pk
    # and adds them in the message's transaction.
    records: tuple[Any, ...] = ()


@dataclass(slots=True)
class WorkItem:
    """One message on its way through the stages."""

    message_pk: int
    raw: bytes
    account: str | None = None  # the account it came from (drafts answer from its address)
    results: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    name: str

    def run(self, item: WorkItem) -> StageResult: ...


class BatchStage(Stage, Protocol):
    """A stage that is faster over several messages at once (one model batch)."""

    def run_many(self, items: Sequence[WorkItem]) -> list[StageResult]: ...


@dataclass(frozen=True, slots=True)
class ProcessedMessage:
    """The outcome of one message's pass through the pipeline."""

    message_pk: int
    status: str
    reason: str | None
    results: Mapping[str, Any]


class Pipeline:
    """Runs the configured stages over messages waiting in the ledger."""

    def __init__(
        self, db: Database, stages: Sequence[Stage], *, group_size: int = 20
    ) -> None:
        self.db = db
        self.stages: list[Stage] = list(stages)
        # Messages committed together: fewer commits (fsyncs) on PostgreSQL, and a crash
        # costs at most this many messages' work, which is simply redone.
        self.group_size = group_size

    def run_stages(self, item: WorkItem) -> list[tuple[Stage, StageResult, float]]:
        """Run the stages over one item in memory; nothing is written."""
        return run_group(self.stages, [item])[0]

    def process(self, message_pk: int) -> ProcessedMessage:
        """Process one message and commit its events and status in one transaction."""
        [processed] = self.process_group([message_pk])
        return processed

    def process_group(self, message_pks: Sequence[int]) -> list[ProcessedMessage]:
        """Process a few messages and commit them together (one commit, not one each).

        Each message's events and status are written together, so a crash leaves every
        message either wholly processed or untouched. Stages that can run over several
        messages at once (`run_many`) get the whole group in one batch.
        """
        done: list[ProcessedMessage] = []
        with self.db.session() as session:
            raws = dict(session.execute(
                select(RawMessage.message_pk, RawMessage.raw)
                .where(RawMessage.message_pk.in_(list(message_pks)))
            ).all())
            messages = {pk: session.get(Message, pk) for pk in message_pks}
            accounts = dict(session.execute(
                select(Message.id, Account.name)
                .join(Mailbox, Mailbox.id == Message.mailbox_id)
                .join(Account, Account.id == Mailbox.account_id)
                .where(Message.id.in_(list(message_pks)))
            ).all())
            items = []
            for pk, message in messages.items():
                if message is None:
                    raise LookupError(f"no message with id {pk}")
                if pk in raws:
                    items.append(WorkItem(message_pk=pk, raw=raws[pk], account=accounts.get(pk)))
                    continue
                message.status = MessageStatus.FAILED
                message.status_reason = "raw message missing from the ledger"
                record_event(session, "pipeline", "error", message_pk=pk,
                             mailbox_id=message.mailbox_id,
                             details={"error": message.status_reason})
                done.append(ProcessedMessage(pk, message.status, message.status_reason, {}))
            for item, steps in zip(items, run_group(self.stages, items), strict=True):
                message = messages[item.message_pk]
                assert message is not None
                self._record(session, message, steps)
                done.append(ProcessedMessage(item.message_pk, message.status,
                                             message.status_reason, dict(item.results)))
        failpoint("pipeline.after_commit")
        return done

    def _record(
        self, session: Any, message: Message, steps: list[tuple[Stage, StageResult, float]]
    ) -> None:
        for stage, result, elapsed_ms in steps:
            details = dict(result.details)
            if result.reason:
                details.setdefault("reason", result.reason)
            record_event(
                session, stage.name, result.outcome, message_pk=message.id,
                mailbox_id=message.mailbox_id, details=details, model=result.model,
                model_version=result.model_version, latency_ms=round(elapsed_ms, 3),
                tokens_in=result.tokens_in, tokens_out=result.tokens_out, cost=result.cost,
            )
            for column, value in result.message_updates.items():
                setattr(message, column, value)
            for record in result.records:
                record.message_pk = message.id
                if getattr(record, "mailbox_id", 0) is None:  # audit events name the mailbox
                    record.mailbox_id = message.mailbox_id
                session.add(record)
            if result.status is not None:
                message.status = result.status
                message.status_reason = result.reason
        message.updated_at = utcnow()

    def process_pending(
        self,
        mailbox_id: int | None = None,
        *,
        stop: threading.Event | None = None,
        on_message: Callable[[ProcessedMessage], None] | None = None,
    ) -> int:
        """Process every message still waiting (of one mailbox, or all); returns the count.

        Stops between groups when `stop` is set, so SIGTERM finishes the messages in hand
        (at most `group_size`, usually well under a second of work) and commits them.
        """
        count = 0
        seen: set[int] = set()
        while not (stop and stop.is_set()):
            with self.db.session() as session:
                batch = [pk for pk in pending_messages(session, mailbox_id, limit=200)
                         if pk not in seen]
            if not batch:
                break
            seen.update(batch)  # a message that stays pending is retried next poll, not now
            for start in range(0, len(batch), self.group_size):
                if stop and stop.is_set():
                    break
                for processed in self.process_group(batch[start:start + self.group_size]):
                    count += 1
                    if on_message:
                        on_message(processed)
        return count


Steps = list[tuple[Stage, StageResult, float]]


def run_group(stages: Sequence[Stage], items: Sequence[WorkItem]) -> list[Steps]:
    """Run the stages over several items in memory, batching where a stage can."""
    steps: list[Steps] = [[] for _ in items]
    active = list(range(len(items)))
    for stage in stages:
        if not active:
            break
        timed = _run_stage(stage, [items[i] for i in active])
        still_active = []
        for index, (result, elapsed_ms) in zip(active, timed, strict=True):
            steps[index].append((stage, result, elapsed_ms))
            items[index].results[stage.name] = result.value
            if not result.stop:
                still_active.append(index)
        active = still_active
    return steps


def _run_stage(stage: Stage, items: list[WorkItem]) -> list[tuple[StageResult, float]]:
    run_many = getattr(stage, "run_many", None)
    if run_many is not None and len(items) > 1:
        started = time.perf_counter()
        try:
            results = run_many(items)
        except TransientError:
            raise
        except Exception:  # noqa: BLE001 - find the message at fault one by one
            log.warning("batch of %s failed; retrying its messages one by one", stage.name)
        else:
            share = (time.perf_counter() - started) * 1000.0 / len(items)
            return [(result, share) for result in results]
    return [_run_one(stage, item) for item in items]


def _run_one(stage: Stage, item: WorkItem) -> tuple[StageResult, float]:
    started = time.perf_counter()
    try:
        result = stage.run(item)
    except TransientError:
        raise
    except Exception as exc:  # a bug or bad data in one stage fails only this message
        log.exception("stage %s failed on message %s", stage.name, item.message_pk)
        result = StageResult(
            "error", status=MessageStatus.FAILED, stop=True,
            reason=f"{stage.name} failed: {type(exc).__name__}: {exc}",
            details={"traceback": traceback.format_exc(limit=20)},
        )
    return result, (time.perf_counter() - started) * 1000.0


@dataclass(frozen=True, slots=True)
class DryRun:
    """What the stages made of one email, in memory only."""

    steps_by_name: tuple[tuple[str, StageResult], ...]
    values: Mapping[str, Any]

    @property
    def steps(self) -> list[StageResult]:
        return [result for _, result in self.steps_by_name]


def dry_run(stages: Sequence[Stage], raw: bytes, *, account: str | None = None) -> DryRun:
    """Run the stages over raw bytes without any database (for `mailbot draft` and tests)."""
    item = WorkItem(message_pk=0, raw=raw, account=account)
    [done] = run_group(stages, [item])
    return DryRun(tuple((stage.name, result) for stage, result, _ in done), dict(item.results))
