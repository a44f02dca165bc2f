"""Escalation: the cloud LLM answers what the router sent it, with personal data kept home.

For each message routed "llm": the customer's subject and new text (and the facts extracted
from them) are pseudonymised, the LLM classifies the email (structured output) and writes
the reply body (text), and the placeholders in its answer are restored (card numbers stay
masked). What was sent, exactly as sent, goes into the "llm" audit events; the answers are
kept as teacher labels. A failed call, or a spent budget, sends the message to a person.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailbot.audit.cost import record_budget_exhausted
from mailbot.compose.reply import field_values
from mailbot.db.llm_records import TeacherLabel
from mailbot.db.models import MessageStatus
from mailbot.llm.audit import record_llm_call, record_llm_failure
from mailbot.llm.client import LLMClassification, LLMClient, LLMResult
from mailbot.llm.errors import LLMRequestRejected, LLMResponseInvalid, LLMUnavailable
from mailbot.llm.teacher import LABEL_KINDS, teacher_text
from mailbot.pipeline.runner import StageResult, WorkItem
from mailbot.privacy.pseudonymise import PLACEHOLDER, Pseudonymiser
from mailbot.route.decision import HUMAN, LLM, RouteDecision, RouteReason
from mailbot.route.history import BudgetGate
from mailbot.route.stage import PendingRows

if TYPE_CHECKING:
    from mailbot.config import Config
    from mailbot.parse.message import InboundMessage

log = logging.getLogger(__name__)

_LLM_ERRORS = (LLMUnavailable, LLMResponseInvalid, LLMRequestRejected)
_GREETING = re.compile(
    r"\A\s*(?:hello|hi|hey|dear|good (?:morning|afternoon|evening)|hallo|guten tag"
    r"|liebe[rs]?|sehr geehrte[rs]?|hola|estimad[oa]|buenos días|bonjour|cher|chère)\b"
    r"[^\n.?]{0,40}[,!:]?[ \t]*\n+",
    re.IGNORECASE,
)
_SIGN_OFF = re.compile(
    r"\n[ \t]*(?:kind regards|best regards|best wishes|warm regards|regards|best|thanks"
    r"|thank you|cheers|sincerely|yours sincerely|mit freundlichen grüßen|viele grüße"
    r"|beste grüße|freundliche grüße|saludos|atentamente|un saludo|cordialement|bien à vous)"
    r"[ \t]*[,.!]?[ \t]*(?:\n[^\n]{0,60}){0,3}\s*\Z",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Escalation:
    """The cloud LLM's work on one message, restored and ready for the draft stage."""

    body: str  # the reply body with the customer's data put back (cards masked)
    model: str  # the model that answered
    classification: LLMClassification | None
    sent_subject: str  # what the LLM saw: pseudonymised
    sent_body: str
    placeholders: dict[str, int]  # how many placeholders of each category were sent


def trim_reply(body: str) -> str:
    """The reply without its own greeting and sign-off: the shared layout adds ours."""
    body = _GREETING.sub("", body, count=1)
    return _SIGN_OFF.sub("", body).strip()


def _known_names(message: InboundMessage) -> list[str]:
    people = [message.from_addr, *message.reply_to, *message.to, *message.cc]
    return [a.name for a in people if a is not None and a.name]


class EscalateStage:
    """Sends messages routed "llm" to the cloud LLM; failures go to a person."""

    name = "escalate"

    def __init__(
        self,
        config: Config,
        client: LLMClient,
        *,
        labels: Callable[[], Sequence[str]],
        budget: BudgetGate | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.labels = labels
        self.budget = budget

    def run(self, item: WorkItem) -> StageResult:
        return self.run_many([item])[0]

    def run_many(self, items: Sequence[WorkItem]) -> list[StageResult]:
        """Escalate a batch; calls made earlier in the batch count against the budget."""
        spent = 0.0
        out = []
        for item in items:
            result, cost = self._one(item, spent)
            spent += cost
            out.append(result)
        return out

    def _one(self, item: WorkItem, spent: float) -> tuple[StageResult, float]:
        decision: RouteDecision | None = item.results.get("route")
        if decision is None or decision.route != LLM:
            return StageResult("not_needed"), 0.0
        rows = PendingRows()
        if self.budget is not None and self.budget.limited:
            state = self.budget.state(spent)
            if not state.allowed:
                record_budget_exhausted(rows.session, state)
                reason = RouteReason("budget_exhausted", state.reason or "cloud budget reached",
                                     HUMAN)
                return self._to_human(decision, reason, rows), 0.0

        message = item.results["parse"]
        pseudonymiser = Pseudonymiser.from_config(self.config, _known_names(message))
        subject = pseudonymiser.redact(message.subject or "").redacted
        body = pseudonymiser.redact(message.new_text or message.text).redacted
        facts = {name: pseudonymiser.redact_value(name, value)
                 for name, value in field_values(item.results.get("extract")).items()}
        sent = Counter(m.group(1) for m in PLACEHOLDER.finditer(f"{subject}\n{body}"))
        classification = item.results["classify"]
        passages = [getattr(p, "text", "") for p in item.results.get("retrieve") or ()]
        task = "classify"
        calls: list[LLMResult[Any]] = []
        try:
            answer: LLMResult[LLMClassification] | None = None
            if self._wants_classification(decision):
                answer = self.client.classify(subject, body, list(self.labels()))
                calls.append(answer)
                record_llm_call(rows.session, answer.call, message_pk=None,
                                details={"placeholders": dict(sent)})
            intent = answer.value.intent if answer else classification.intent.label
            language = answer.value.language if answer else classification.language
            task = "reply"
            reply = self.client.draft_reply(
                subject, body, intent=intent, language=language, facts=facts,
                references=passages, company=self.config.drafts.company, signature="",
            )
            calls.append(reply)
            record_llm_call(rows.session, reply.call, message_pk=None,
                            details={"placeholders": dict(sent)})
        except _LLM_ERRORS as exc:
            record_llm_failure(rows.session, task, exc, model=self.config.llm.model,
                               message_pk=None)
            log.warning("cloud LLM failed on message %s (%s): %s", item.message_pk, task, exc)
            reason = RouteReason("llm_failed", f"the cloud LLM failed ({task}): {exc}", HUMAN,
                                 {"task": task, "error": type(exc).__name__,
                                  "cause": getattr(exc, "reason", None)})
            return self._to_human(decision, reason, rows), sum(c.call.cost for c in calls)

        rows.rows.extend(self._teacher_labels(subject, body, answer, reply))
        escalation = Escalation(
            body=trim_reply(pseudonymiser.restore(reply.value)),
            model=reply.call.response_model,
            classification=answer.value if answer else None,
            sent_subject=subject,
            sent_body=body,
            placeholders=dict(sent),
        )
        details = {
            **decision.to_json(),
            "model": escalation.model,
            "placeholders": dict(sent),
            "llm_classification": None if answer is None else {
                "intent": answer.value.intent, "priority": answer.value.priority,
                "sentiment": answer.value.sentiment, "language": answer.value.language,
                "confidence": answer.value.confidence,
            },
        }
        cost = sum(c.call.cost for c in calls)
        # The cost is on the "llm" events; this event only says what was done with them.
        return StageResult("ok", value=escalation, details=details, model=escalation.model,
                           records=tuple(rows.rows)), cost

    def _wants_classification(self, decision: RouteDecision) -> bool:
        mode = self.config.route.llm_classify
        if mode == "unsure":
            return bool({"low_confidence", "out_of_scope"} & set(decision.codes))
        return mode == "always"

    def _to_human(self, decision: RouteDecision, reason: RouteReason, rows: PendingRows
                  ) -> StageResult:
        human = decision.with_reason(reason, route=HUMAN)
        return StageResult(HUMAN, value=human, status=MessageStatus.NEEDS_HUMAN,
                           reason=human.summary(), stop=True, details=human.to_json(),
                           records=tuple(rows.rows))

    def _teacher_labels(
        self,
        subject: str,
        body: str,
        answer: LLMResult[LLMClassification] | None,
        reply: LLMResult[str],
    ) -> list[TeacherLabel]:
        # New rows, not `save_teacher_label`'s upsert: a message passes here once per
        # commit (only fetched messages are processed), and the runner adds them with it.
        text = teacher_text(subject, body)
        rows = []
        if answer is not None:
            for kind in LABEL_KINDS:
                label = getattr(answer.value, kind)
                rows.append(TeacherLabel(kind=kind, label=label, value={"label": label},
                                         input_text=text, model=answer.call.response_model,
                                         confidence=answer.value.confidence))
        rows.append(TeacherLabel(kind="reply", label=None, value={"text": reply.value},
                                 input_text=text, model=reply.call.response_model))
        return rows
