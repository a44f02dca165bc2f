"""The route stage: slm, llm, human or skip for each message, with every reason.

It runs after classify and extract (and the knowledge-base retrieval, when configured) and
before escalation and drafting. What it needs from the ledger (the mailbox, the thread's
history, the budget) comes through its constructor; without them (`mailbot route --file`)
those rules simply see no history and no spending.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from mailbot.audit.cost import BudgetState, record_budget_exhausted
from mailbot.db.models import MessageStatus
from mailbot.pipeline.runner import StageResult, WorkItem
from mailbot.route.decision import HUMAN, LLM, SKIP, RouteDecision, RouteReason, decide
from mailbot.route.history import BudgetGate, LedgerLookup, ThreadKey, count_in_batch
from mailbot.route.rules import RouteInput, apply_rules

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailbot.config import Config

log = logging.getLogger(__name__)


class PendingRows:
    """Collects the rows that the audit helpers (`record_llm_call`, ...) would add to a
    session, so that the runner adds them in the message's own transaction."""

    def __init__(self) -> None:
        self.rows: list[Any] = []

    def add(self, row: Any) -> None:
        self.rows.append(row)

    @property
    def session(self) -> Session:
        """This collector where a helper expects a session (it only calls `add`)."""
        return cast("Session", self)


def own_addresses(config: Config) -> frozenset[str]:
    """Every address mail is answered from: the accounts' support addresses and usernames."""
    found = {config.drafts.support_address}
    for account in config.accounts:
        found.update((account.support_address or "", account.username))
    return frozenset(a.lower() for a in found if a and "@" in a)


def no_cloud(config: Config, account: str | None, mailbox: str | None) -> str | None:
    """The `route.no_cloud` entry that keeps this message on the server, if any.

    An entry for one mailbox of the account also matches when the mailbox is not known
    (`mailbot route --file`): privacy rules fail closed.
    """
    for entry in config.route.no_cloud:
        name, _, folder = entry.partition("/")
        if name == account and (not folder or mailbox is None or folder == mailbox):
            return entry
    return None


class RouteStage:
    """Decides where each message goes; human and skip stop the pipeline for it."""

    name = "route"

    def __init__(
        self,
        config: Config,
        *,
        llm_available: bool,
        ledger: LedgerLookup | None = None,
        budget: BudgetGate | None = None,
    ) -> None:
        self.config = config
        self.settings = config.route
        self.llm_available = llm_available
        self.ledger = ledger
        self.budget = budget
        self.own_addresses = own_addresses(config)

    def run(self, item: WorkItem) -> StageResult:
        return self.run_many([item])[0]

    def run_many(self, items: Sequence[WorkItem]) -> list[StageResult]:
        """Route several messages; messages of one batch see each other's thread history."""
        budget: list[BudgetState] = []  # read at most once per batch, when first needed
        seen: list[ThreadKey] = []
        out = []
        for item in items:
            message = item.results["parse"]
            key = ThreadKey.of(item.message_pk, message)
            earlier = count_in_batch(key, seen)
            mailbox = None
            if self.ledger is not None and item.message_pk:
                earlier += self.ledger.earlier_in_thread(key)
                mailbox = self.ledger.mailbox_of(item.message_pk)
            seen.append(key)
            data = RouteInput(
                message=message,
                classification=item.results.get("classify"),
                extraction=item.results.get("extract"),
                generated=item.results.get("generate"),
                account=item.account,
                mailbox=mailbox,
                earlier_in_thread=earlier,
                own_addresses=self.own_addresses,
            )
            reasons = apply_rules(data, self.settings)
            wants_cloud = any(r.action == LLM for r in reasons)
            block, state = (self._cloud_block(item.account, mailbox, budget)
                            if wants_cloud else (None, None))
            decision = decide(reasons, cloud_block=block)
            out.append(self._result(decision, state))
        return out

    def _cloud_block(
        self, account: str | None, mailbox: str | None, budget: list[BudgetState]
    ) -> tuple[RouteReason | None, BudgetState | None]:
        """Why this message may not go to the cloud LLM (and the budget, when that is why)."""
        rule = no_cloud(self.config, account, mailbox)
        if rule is not None:
            return RouteReason("no_cloud", f"personal data must not leave the server "
                               f"(route.no_cloud: {rule})", HUMAN, {"rule": rule}), None
        if not self.llm_available:
            return RouteReason("llm_not_configured", "no cloud LLM is configured (llm.base_url)",
                               HUMAN), None
        if self.budget is not None and self.budget.limited:
            if not budget:
                budget.append(self.budget.state())
            state = budget[0]
            if not state.allowed:
                return RouteReason("budget_exhausted", state.reason or "cloud budget reached",
                                   HUMAN, {"spent_today": round(state.spent_today, 6),
                                           "spent_month": round(state.spent_month, 6)}), state
        return None, None

    def _result(self, decision: RouteDecision, state: BudgetState | None) -> StageResult:
        details = decision.to_json()
        if decision.route == SKIP:
            return StageResult("skipped", value=decision, status=MessageStatus.SKIPPED,
                               reason=f"no automatic reply: {decision.summary()}", stop=True,
                               details=details)
        if decision.route == HUMAN:
            rows = PendingRows()
            if state is not None and not state.allowed:
                record_budget_exhausted(rows.session, state)
            log.info("routed to a person: %s", decision.summary())
            return StageResult(HUMAN, value=decision, status=MessageStatus.NEEDS_HUMAN,
                               reason=decision.summary(), stop=True, details=details,
                               records=tuple(rows.rows))
        return StageResult(decision.route, value=decision, status=MessageStatus.ROUTED,
                           reason=decision.summary() if decision.reasons else None,
                           details=details)
