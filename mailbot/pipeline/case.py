"""The contract between the stages: what is known about one message so far, and one step.

A `Case` is frozen: each stage takes one (or a batch) and returns a `Step` holding the case
with its own result added (`dataclasses.replace`). Stages touch neither the database nor the
network; the runner loads what they need from the ledger (the thread's history) into the
case and writes what they return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from mailbot.db.models import MessageStatus

if TYPE_CHECKING:
    from mailbot.classify.result import Classification
    from mailbot.compose.generator import GeneratedReply
    from mailbot.compose.reply import Draft
    from mailbot.compose.safety import SafetyReport
    from mailbot.fields.result import Extraction
    from mailbot.kb.index import Passage
    from mailbot.llm.escalate import Escalation
    from mailbot.parse.message import InboundMessage
    from mailbot.route.decision import RouteDecision


class StageOrderError(RuntimeError):
    """A stage ran before the one whose result it needs: a wiring bug."""


@dataclass(frozen=True, slots=True)
class Case:
    """One message on its way through the stages."""

    message_pk: int
    raw: bytes
    account: str | None = None  # the account it came from (drafts answer from its address)
    mailbox: str | None = None  # the folder it came from
    # The customer's earlier messages in this thread, as the ledger knows them (the router's
    # repeated-contact rule); the runner fills it in after parsing.
    earlier_in_thread: int = 0
    message: InboundMessage | None = None
    classification: Classification | None = None
    extraction: Extraction | None = None
    passages: tuple[Passage, ...] = ()
    generated: GeneratedReply | None = None
    decision: RouteDecision | None = None
    escalation: Escalation | None = None
    draft: Draft | None = None
    no_draft: str | None = None  # why no draft could be written (no template, no address)
    safety: SafetyReport | None = None

    def parsed(self) -> InboundMessage:
        """The parsed message; a stage that needs it runs after parse."""
        if self.message is None:
            raise StageOrderError(f"message {self.message_pk} has not been parsed")
        return self.message

    def classified(self) -> Classification:
        """The small model's classification; a stage that needs it runs after classify."""
        if self.classification is None:
            raise StageOrderError(f"message {self.message_pk} has not been classified")
        return self.classification

    def with_(self, **changes: Any) -> Case:
        """A copy with some results added."""
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Step:
    """What one stage did to one message: the case it hands on, and what the audit log keeps.

    `details` go into the append-only `events` and must hold no personal data; `facts` (field
    values, generated text) go into `message_facts`, which retention and erasure can clear.
    A `status` with `stop` ends the message's pass (a parse failure, an auto-reply).
    """

    case: Case
    outcome: str  # "ok", "skipped", "error", ...
    status: MessageStatus | None = None
    reason: str | None = None  # why, for a skip or an error (kept on the message)
    details: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    stop: bool = False
    model: str | None = None
    model_version: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None
    # Filled in by the runner: which stage, and how long it took.
    stage: str = ""
    latency_ms: float = 0.0


class Stage(Protocol):
    """One step of the pipeline over one message."""

    name: str

    def run(self, case: Case) -> Step: ...


class BatchStage(Stage, Protocol):
    """A stage that is faster over several messages at once (one model batch)."""

    def run_many(self, cases: Sequence[Case]) -> list[Step]: ...


__all__ = ["BatchStage", "Case", "Stage", "StageOrderError", "Step"]
