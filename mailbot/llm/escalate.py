"""Escalation: the cloud LLM answers what the router sent it, with personal data kept home.

Each cloud call is a step of its own, never inside an open database transaction:

1. planned, in the transaction that routes the message (status `escalating`): the customer's
   subject, new text and the facts extracted from them are pseudonymised and the first
   request is recorded in `llm_requests` (state `pending`), exactly as it will be sent;
2. claimed, in one short transaction that takes the budget lock: the budget is checked
   against what was spent plus what calls in flight may still cost, and the request is
   marked `sent` with what it may cost at most (or refused: the message goes to a person);
3. sent, with no transaction open; SIGTERM cuts only the waits between retries (the request
   goes back to `pending`, nothing was paid);
4. answered, in one transaction: the answer, its cost and the teacher labels are stored,
   then either the next request is recorded (the reply, after the classification) or the
   message is finished (its draft, or a person when the cloud LLM failed).

A request that a worker finds `sent` by another that died is never sent again (its answer
may have been paid for): the message goes to a person with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from mailbot.audit.cost import (
    budget_state,
    record_budget_exhausted,
)
from mailbot.compose.reply import field_values
from mailbot.compose.trim import trim_reply
from mailbot.db.base import utcnow
from mailbot.db.llm_records import BudgetLock, LLMRequest
from mailbot.db.models import Message
from mailbot.db.session import Database
from mailbot.errors import Stopping, TransientError
from mailbot.ingest.lease import holder_is_dead
from mailbot.llm.audit import record_llm_call, record_llm_failure
from mailbot.llm.client import LLMClassification, LLMClient, LLMResult
from mailbot.llm.errors import LLMRequestRejected, LLMResponseInvalid, LLMUnavailable
from mailbot.llm.teacher import LABEL_KINDS, save_teacher_label, teacher_text
from mailbot.pipeline.case import Case, Step
from mailbot.privacy.pseudonymise import PLACEHOLDER, Pseudonymiser
from mailbot.route.decision import HUMAN, RouteDecision, RouteReason

if TYPE_CHECKING:
    from mailbot.config import Config
    from mailbot.parse.message import InboundMessage

log = logging.getLogger(__name__)

CLASSIFY, REPLY = "classify", "reply"
_LLM_ERRORS = (LLMUnavailable, LLMResponseInvalid, LLMRequestRejected)
@dataclass(frozen=True, slots=True)
class Escalation:
    """The cloud LLM's work on one message: its reply (the customer's data put back, cards
    masked), its classification, or why it could not answer (`failure`)."""

    body: str | None = None
    model: str | None = None
    classification: LLMClassification | None = None
    failure: RouteReason | None = None

    @property
    def answered(self) -> bool:
        """Whether there is a reply body to draft from."""
        return self.failure is None and self.body is not None


def _known_names(message: InboundMessage) -> list[str]:
    people = [message.from_addr, *message.reply_to, *message.to, *message.cc]
    return [a.name for a in people if a is not None and a.name]


# --- 1. planning (pure) ----------------------------------------------------------------------


def plan_request(case: Case, config: Config, labels: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The first request of an escalated message: (task, what is recorded and sent).

    Everything that leaves the server is pseudonymised here; `restore` maps the placeholders
    back (it stays in `llm_requests`, which erasure clears, and never leaves).
    """
    message = case.parsed()
    classification = case.classified()
    decision = case.decision
    assert decision is not None
    pseudonymiser = Pseudonymiser.from_config(config, _known_names(message))
    subject = pseudonymiser.redact(message.subject or "").redacted
    body = pseudonymiser.redact(message.new_text or message.text).redacted
    facts = {name: pseudonymiser.redact_value(name, value)
             for name, value in field_values(case.extraction).items()}
    sent = Counter(m.group(1) for m in PLACEHOLDER.finditer(f"{subject}\n{body}"))
    payload = {
        "subject": subject,
        "body": body,
        "facts": facts,
        "references": [p.text for p in case.passages],
        "labels": list(labels),
        "intent": classification.intent.label,
        "language": classification.language,
        "placeholders": dict(sent),
        "restore": dict(pseudonymiser.placeholders),
        "decision": decision.to_json(),
    }
    mode = config.route.llm_classify
    # A quality sample is sent for its label: the small model was sure, the point is to check.
    unsure = bool({"low_confidence", "out_of_scope", "quality_sample"} & set(decision.codes))
    wants_classification = mode == "always" or (mode == "unsure" and unsure)
    return (CLASSIFY if wants_classification else REPLY), payload


def restore(text: str, mapping: dict[str, str]) -> str:
    """Put the customer's values back into the LLM's text (unknown placeholders stay)."""
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


def reserve_for(client: LLMClient, task: str, payload: dict[str, Any], company: str) -> float:
    """The most one call for this request may cost: what the budget holds back while it is
    in flight (`LLMClient.most_cost` over the exact conversation it sends)."""
    if task == CLASSIFY:
        messages = client.classify_messages(payload["subject"], payload["body"],
                                            payload["labels"])
        return client.most_cost(messages, repairable=True)
    messages = client.reply_messages(
        payload["subject"], payload["body"], intent=payload.get("intent"),
        language=payload.get("language"), facts=payload.get("facts") or {},
        references=payload.get("references") or (), company=company)
    return client.most_cost(messages, repairable=False)


def escalate_now(case: Case, config: Config, client: LLMClient, labels: Sequence[str]
                 ) -> Escalation:
    """Ask the cloud LLM about one case in memory, nothing recorded (`mailbot draft --llm`)."""
    task, payload = plan_request(case, config, labels)
    classification = None
    try:
        if task == CLASSIFY:
            answer = client.classify(payload["subject"], payload["body"], payload["labels"])
            classification = answer.value
            payload = {**payload, "intent": answer.value.intent,
                       "language": answer.value.language}
        reply = client.draft_reply(
            payload["subject"], payload["body"], intent=payload["intent"],
            language=payload["language"], facts=payload["facts"],
            references=payload["references"], company=config.drafts.company, signature="")
    except _LLM_ERRORS as exc:
        return Escalation(failure=RouteReason("llm_failed", f"the cloud LLM failed: {exc}",
                                              HUMAN))
    return Escalation(body=trim_reply(restore(reply.value, payload["restore"])),
                      model=reply.call.response_model, classification=classification)


# --- the host: what the pipeline does for the escalation step -------------------------------


class EscalationHost(Protocol):
    """What the pipeline provides: the case of a message, drafting, and recording."""

    def case_for(self, message_pk: int, decision: RouteDecision) -> Case: ...

    def compose(self, case: Case) -> list[Step]: ...

    def commit_outcome(self, session: Session, case: Case, steps: Sequence[Step]) -> Any: ...

    def plan_escalation(self, message_pk: int, decision: RouteDecision
                        ) -> tuple[str, dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class _Job:
    request_id: int
    message_pk: int
    mailbox_id: int
    task: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EscalationReport:
    """What one `run` did."""

    sent: int = 0
    answered: int = 0
    failed: int = 0
    refused: int = 0


class EscalationRunner:
    """Sends the recorded requests, several at once, and records each answer as it comes."""

    def __init__(
        self,
        database: Database,
        config: Config,
        client: LLMClient,
        host: EscalationHost,
        *,
        owner: str,
        stop: threading.Event | None = None,
        labels: Callable[[], Sequence[str]] = list,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.database = database
        self.config = config
        self.client = client
        self.host = host
        self.owner = owner
        self.stop = stop or threading.Event()
        self.labels = labels
        self.clock = clock
        self.concurrency = config.llm.concurrency
        settings = config.llm
        # A request still `sent` this long after it went out lost its worker.
        self.stale_after = timedelta(seconds=settings.attempts * (
            settings.connect_timeout + settings.read_timeout) + settings.attempts
            * settings.retry_max_seconds + 60)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sending: set[int] = set()  # request ids this runner has on the wire now
        self._planning: set[int] = set()  # agents' requests this runner is planning now

    def run(self, *, mailbox_id: int | None = None, until: threading.Event | None = None
            ) -> EscalationReport:
        """Send pending requests (of one mailbox, or every one) until none is left.

        With `until`, keep watching for new requests until it is set (the local stages of
        the same poll are still recording them).
        """
        with self._lock:
            before = Counter(self._counts)
        try:
            self.recover_interrupted()
            self.plan_requested(mailbox_id)
        except TransientError as exc:
            log.warning("could not look for interrupted or requested cloud calls: %s", exc)
        with ThreadPoolExecutor(max_workers=self.concurrency,
                                thread_name_prefix="mailbot-llm") as pool:
            in_flight: set[Future[None]] = set()
            outage = 0
            while True:
                finishing = until is None or until.is_set() or self.stop.is_set()
                free = self.concurrency - len(in_flight)
                try:
                    jobs, refused = (self._claim(free, mailbox_id)
                                     if free > 0 and not self.stop.is_set() else ([], 0))
                    outage = 0
                except TransientError as exc:  # the database is briefly away: wait, go on
                    outage += 1
                    if outage > 30 and not in_flight:
                        log.warning("the cloud LLM step stops for now: %s", exc)
                        break
                    log.warning("could not claim cloud requests (%s); trying again", exc)
                    jobs, refused = [], 0
                    self.stop.wait(1.0)
                in_flight.update(pool.submit(self._one, job) for job in jobs)
                if not in_flight:
                    if refused:
                        continue  # those went to a person; there may be more behind them
                    if finishing:
                        break
                    self.stop.wait(0.1)
                    continue
                done, in_flight = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # an unexpected error is a bug: let it be seen
        with self._lock:
            counts = self._counts - before
        return EscalationReport(counts["sent"], counts["answered"], counts["failed"],
                                counts["refused"])

    # --- 0. what agents asked for on the desk (mailbot.llm.ondemand) --------------------------

    def plan_requested(self, mailbox_id: int | None = None, limit: int = 50) -> int:
        """Plan the escalations agents asked for: their messages' local stages run again
        (outside any transaction) and the first request is recorded, `pending` like any
        other. A message that cannot be planned goes to a person with the reason."""
        from mailbot.llm.ondemand import PLANNING, REQUESTED

        with self.database.session() as session:
            query = (select(LLMRequest).join(Message, Message.id == LLMRequest.message_pk)
                     .where(LLMRequest.state == REQUESTED))
            if mailbox_id is not None:
                query = query.where(Message.mailbox_id == mailbox_id)
            rows = session.scalars(query.order_by(LLMRequest.id).limit(limit)
                                   .with_for_update(skip_locked=True, of=LLMRequest)).all()
            asked = [(row.id, row.message_pk, dict(row.request)) for row in rows]
            for row in rows:
                row.state = PLANNING
                row.claimed_by = self.owner
                row.sent_at = utcnow()
            with self._lock:
                self._planning.update(row.id for row in rows)
        for request_id, message_pk, request in asked:
            try:
                self._plan_one(request_id, message_pk, request)
            finally:
                with self._lock:
                    self._planning.discard(request_id)
        return len(asked)

    def _plan_one(self, request_id: int, message_pk: int, asked: dict[str, Any]) -> None:
        from mailbot.llm.ondemand import PLANNING, planned

        decision = RouteDecision.from_json(asked["decision"])
        try:
            task, payload = self.host.plan_escalation(message_pk, decision)
        except Exception as exc:  # noqa: BLE001 - this message goes to a person, not the rest
            log.warning("the escalation of message %s could not be planned: %s", message_pk,
                        exc)
            error = f"{type(exc).__name__}: {exc}"
            self._durably(self._planning_failed, request_id, message_pk, asked, error)
            return
        with self.database.session() as session:
            row = session.get(LLMRequest, request_id, with_for_update=True)
            if row is None or row.state != PLANNING or row.claimed_by != self.owner:
                return
            row.task = task
            row.request = planned(asked, payload)
            row.state = "pending"
            row.claimed_by = None
            row.sent_at = None

    def _planning_failed(self, request_id: int, message_pk: int, asked: dict[str, Any],
                         error: str) -> None:
        with self.database.session() as session:
            row = session.get(LLMRequest, request_id)
            if row is None:
                return
            row.state = "failed"
            row.error = error
            self._hand_over(session, message_pk, asked, RouteReason(
                "llm_failed", f"the request to the cloud LLM could not be prepared: {error}",
                HUMAN))

    # --- 2. claiming, with the budget ----------------------------------------------------------

    def claim(self, limit: int, mailbox_id: int | None = None) -> list[_Job]:
        """Take up to `limit` pending requests that the budget allows (those it refuses for
        good go to a person on the way)."""
        return self._claim(limit, mailbox_id)[0]

    def _claim(self, limit: int, mailbox_id: int | None) -> tuple[list[_Job], int]:
        if limit <= 0:
            return [], 0
        refused = 0
        with self.database.session() as session:
            rows = self._pending(session, limit, mailbox_id)
            if not rows:
                return [], 0
            jobs = []
            for row, message_mailbox in rows:
                reserve = reserve_for(self.client, row.task, row.request,
                                      self.config.drafts.company)
                refusal, wait = self._over_budget(session, reserve)
                if refusal is not None:
                    self._refuse(session, row, refusal)
                    refused += 1
                    continue
                if wait:  # the calls in flight may need the rest: try when they are back
                    break
                row.state = "sent"
                row.reserved_cost = reserve
                row.claimed_by = self.owner
                row.sent_at = utcnow()
                jobs.append(_Job(row.id, row.message_pk, message_mailbox, row.task,
                                 dict(row.request)))
        with self._lock:
            self._counts["sent"] += len(jobs)
            # From now until recorded, these are ours on the wire (see recover_interrupted).
            self._sending.update(job.request_id for job in jobs)
        return jobs, refused

    def _pending(self, session: Session, limit: int, mailbox_id: int | None
                 ) -> list[tuple[LLMRequest, int]]:
        # Every budget check takes turns on this row (PostgreSQL: a row lock until commit;
        # SQLite: the write lock), so two workers never both spend the last of the budget.
        session.execute(update(BudgetLock).where(BudgetLock.id == 1)
                        .values(turns=BudgetLock.turns + 1))
        query = (select(LLMRequest, Message.mailbox_id)
                 .join(Message, Message.id == LLMRequest.message_pk)
                 .where(LLMRequest.state == "pending"))
        if mailbox_id is not None:
            query = query.where(Message.mailbox_id == mailbox_id)
        found = session.execute(query.order_by(LLMRequest.id).limit(limit)
                                .with_for_update(skip_locked=True, of=LLMRequest)).all()
        return [(row, mailbox) for row, mailbox in found]

    def _over_budget(self, session: Session, reserve: float) -> tuple[str | None, bool]:
        """(why the call is refused for good, whether it must wait for calls in flight)."""
        settings = self.config.cost
        if not (settings.daily_budget or settings.monthly_budget):
            return None, False
        now = self.clock()
        spent = budget_state(session, now, settings, more=reserve)
        if not spent.allowed:  # what was really spent leaves no room: a person takes it
            return spent.reason, False
        held = budget_state(session, now, settings, reserved=in_flight(session), more=reserve)
        return None, not held.allowed

    def _refuse(self, session: Session, row: LLMRequest, reason: str) -> None:
        row.state = "refused"
        row.error = reason
        settings = self.config.cost
        state = budget_state(session, self.clock(), settings, reserved=in_flight(session))
        record_budget_exhausted(session, state, message_pk=row.message_pk)
        with self._lock:
            self._counts["refused"] += 1
        self._hand_over(session, row.message_pk, row.request,
                        RouteReason("budget_exhausted", reason, HUMAN))

    # --- 3. and 4. sending and recording ---------------------------------------------------

    def _one(self, job: _Job) -> None:
        try:
            self._send_and_record(job)
        finally:
            with self._lock:
                self._sending.discard(job.request_id)

    def _send_and_record(self, job: _Job) -> None:
        try:
            answer = self._send(job)
        except Stopping:
            self._durably(self._release, job)
            return
        except _LLM_ERRORS as exc:
            log.warning("cloud LLM failed on message %s (%s): %s", job.message_pk, job.task, exc)
            self._durably(self._record_failure, job, exc)
            return
        if job.task == CLASSIFY:
            self._durably(self._record_classification, job, answer)
        else:
            self._durably(self._record_reply, job, answer)

    def _durably(self, record: Callable[..., None], *args: Any) -> None:
        """Record an answer already paid for, retrying while the database is briefly away
        (it is lost only if the database stays away; the message then goes to a person)."""
        for attempt in range(6):
            try:
                record(*args)
                return
            except TransientError as exc:
                if attempt == 5 or self.stop.wait(min(30.0, 0.5 * 2 ** attempt)):
                    log.error("could not record a cloud answer: %s", exc)
                    return
                log.warning("could not record a cloud answer (%s); retrying", exc)

    def _send(self, job: _Job) -> LLMResult[Any]:
        payload = job.payload
        key = f"mailbot-{job.request_id}-{job.task}"
        if job.task == CLASSIFY:
            return self.client.classify(payload["subject"], payload["body"], payload["labels"],
                                        request_key=key)
        return self.client.draft_reply(
            payload["subject"], payload["body"], intent=payload.get("intent"),
            language=payload.get("language"), facts=payload.get("facts") or {},
            references=payload.get("references") or (), company=self.config.drafts.company,
            signature="", request_key=key,
        )

    def _release(self, job: _Job) -> None:
        # Stopped during a wait between attempts: no answer came, nothing was paid.
        with self.database.session() as session:
            session.execute(update(LLMRequest)
                            .where(LLMRequest.id == job.request_id,
                                   LLMRequest.claimed_by == self.owner)
                            .values(state="pending", reserved_cost=0.0, claimed_by=None,
                                    sent_at=None))

    def _answered(self, session: Session, job: _Job, result: LLMResult[Any],
                  answer: dict[str, Any]) -> bool:
        """Mark the request answered and record its call; False when an earlier attempt
        already did (its commit went through but the reply to it was lost), so a retry
        adds nothing twice."""
        row = session.get(LLMRequest, job.request_id)
        assert row is not None
        if row.state == "answered":
            log.info("cloud answer for request %s was already recorded", job.request_id)
            return False
        call = result.call
        row.state = "answered"
        row.answer = {**answer, "sent": dict(call.request), "response": call.response_text}
        row.cost = call.cost
        row.tokens_in, row.tokens_out = call.tokens_in, call.tokens_out
        row.model = call.response_model
        row.answered_at = utcnow()
        row.reserved_cost = 0.0
        record_llm_call(session, call, message_pk=job.message_pk, mailbox_id=job.mailbox_id,
                        details={"llm_request": job.request_id,
                                 "placeholders": job.payload.get("placeholders", {})})
        with self._lock:
            self._counts["answered"] += 1
        return True

    def _record_classification(self, job: _Job, result: LLMResult[LLMClassification]) -> None:
        value = result.value
        classification = {"intent": value.intent, "priority": value.priority,
                          "sentiment": value.sentiment, "language": value.language,
                          "confidence": value.confidence}
        text = teacher_text(job.payload["subject"], job.payload["body"])
        with self.database.session() as session:
            if not self._answered(session, job, result, {"classification": classification}):
                return
            for kind in LABEL_KINDS:
                label = getattr(value, kind)
                _add_teacher_label(session, job.message_pk, kind, label, {"label": label},
                                   text, result.call.response_model, value.confidence)
            session.add(LLMRequest(
                message_pk=job.message_pk, task=REPLY, state="pending",
                request={**job.payload, "intent": value.intent, "language": value.language,
                         "classification": classification},
                reserved_cost=0.0, created_at=utcnow()))

    def _record_reply(self, job: _Job, result: LLMResult[str]) -> None:
        payload = job.payload
        classification = payload.get("classification")
        escalation = Escalation(
            body=trim_reply(restore(result.value, payload.get("restore") or {})),
            model=result.call.response_model,
            classification=LLMClassification(**classification) if classification else None,
        )
        decision = RouteDecision.from_json(payload["decision"])
        # Drafting may need the models (a case rebuilt after a restart): before the
        # transaction, never inside it.
        case = self.host.case_for(job.message_pk, decision).with_(escalation=escalation)
        steps = self.host.compose(case)
        text = teacher_text(payload["subject"], payload["body"])
        with self.database.session() as session:
            if not self._answered(session, job, result, {"reply": result.value}):
                return
            _add_teacher_label(session, job.message_pk, "reply", None, {"text": result.value},
                               text, result.call.response_model, None)
            self.host.commit_outcome(session, steps[-1].case if steps else case, steps)

    def _record_failure(self, job: _Job, exc: Exception) -> None:
        assert isinstance(exc, _LLM_ERRORS)
        reason = RouteReason("llm_failed", f"the cloud LLM failed ({job.task}): {exc}", HUMAN,
                             {"task": job.task, "error": type(exc).__name__,
                              "cause": getattr(exc, "reason", None)})
        with self.database.session() as session:
            row = session.get(LLMRequest, job.request_id)
            assert row is not None
            row.state = "failed"
            row.error = str(exc)
            row.reserved_cost = 0.0
            call = getattr(exc, "call", None)
            if call is not None:  # an unusable answer was still paid for
                row.cost = call.cost
            record_llm_failure(session, job.task, exc, model=self.config.llm.model,
                               message_pk=job.message_pk, mailbox_id=job.mailbox_id)
            self._hand_over(session, job.message_pk, job.payload, reason)
        with self._lock:
            self._counts["failed"] += 1

    def _hand_over(self, session: Session, message_pk: int, payload: dict[str, Any],
                   reason: RouteReason) -> None:
        decision = RouteDecision.from_json(payload["decision"])
        case = Case(message_pk=message_pk, raw=b"", decision=decision,
                    escalation=Escalation(failure=reason))
        self.host.commit_outcome(session, case, ())

    # --- recovery ----------------------------------------------------------------------------

    def recover_interrupted(self) -> int:
        """Requests left `sent` by a worker that died: never sent again (their answer may
        have been paid for); their messages go to a person. Returns how many. (An agent's
        request left `planning` was not sent yet: it is planned again.)"""
        from mailbot.llm.ondemand import PLANNING, REQUESTED

        now = self.clock()
        with self.database.session() as session:
            with self._lock:
                planning = set(self._planning)
            for row in session.scalars(select(LLMRequest).where(LLMRequest.state == PLANNING)
                                       .with_for_update(skip_locked=True)):
                if ((row.claimed_by == self.owner and row.id not in planning)
                        or (row.claimed_by != self.owner and row.claimed_by
                            and holder_is_dead(row.claimed_by))
                        or (row.sent_at is not None and row.sent_at < now - self.stale_after)):
                    row.state, row.claimed_by, row.sent_at = REQUESTED, None, None
            rows = session.scalars(
                select(LLMRequest).where(LLMRequest.state == "sent")
                .with_for_update(skip_locked=True)
            ).all()
            with self._lock:
                sending = set(self._sending)
            # Ours but not on the wire: its answer could not be recorded (the database went
            # away for too long). Another worker's: its process is gone, or it is stale.
            lost = [r for r in rows if (r.claimed_by == self.owner and r.id not in sending)
                    or (r.claimed_by != self.owner and r.claimed_by
                        and holder_is_dead(r.claimed_by))
                    or (r.claimed_by != self.owner and r.sent_at is not None
                        and r.sent_at < now - self.stale_after)]
            for row in lost:
                row.state = "interrupted"
                row.reserved_cost = 0.0
                row.error = f"the worker {row.claimed_by} stopped while waiting for the answer"
                log.warning("cloud call for message %s was interrupted; not repeating it",
                            row.message_pk)
                self._hand_over(session, row.message_pk, row.request, RouteReason(
                    "llm_interrupted", "the worker stopped while the cloud LLM answered; the "
                    "call is not repeated, so that it is not paid for twice", HUMAN))
        return len(lost)


def in_flight(session: Session) -> float:
    """What the calls now in flight may still cost (their reservations)."""
    return float(session.scalar(
        select(func.coalesce(func.sum(LLMRequest.reserved_cost), 0.0))
        .where(LLMRequest.state == "sent")) or 0.0)


def pending_for(session: Session, message_pks: Sequence[int]) -> int:
    """How many of these messages still wait for the cloud LLM."""
    return int(session.scalar(
        select(func.count()).select_from(LLMRequest)
        .where(LLMRequest.message_pk.in_(list(message_pks)),
               or_(LLMRequest.state == "pending", LLMRequest.state == "sent"))) or 0)


def _add_teacher_label(session: Session, message_pk: int, kind: str, label: str | None,
                       value: dict[str, Any], text: str, model: str,
                       confidence: float | None) -> None:
    # Replaced when an agent escalates the message again: the latest answer teaches.
    save_teacher_label(session, message_pk, kind, input_text=text, model=model, label=label,
                       value=value, confidence=confidence)
