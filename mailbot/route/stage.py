"""The route stage: slm, llm, human or skip for each message, with every reason.

It runs after classify and extract (and the knowledge-base retrieval, when configured) and
decides once where a message goes. It is pure: the thread's history and the mailbox come in
the case (the runner reads them from the ledger); whether the cloud budget allows a call is
checked where the call is made (`mailbot.llm.escalate`), in the database, so that several
workers never overspend it. What then happens to the message is `mailbot.route.outcome`'s.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailbot.db.models import MessageStatus
from mailbot.pipeline.case import Case, Step
from mailbot.route.decision import HUMAN, LLM, SKIP, RouteDecision, RouteReason, decide
from mailbot.route.history import ThreadKey, count_in_batch
from mailbot.route.rules import RouteInput, apply_rules

if TYPE_CHECKING:
    from mailbot.config import Config
    from mailbot.parse.message import InboundMessage

log = logging.getLogger(__name__)


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


def in_quality_sample(message_pk: int, message: InboundMessage, share: float) -> bool:
    """Whether this message is in the `route.quality_sample` share: a stable hash of its
    Message-ID (of its ledger id without one) below the share."""
    if share <= 0:
        return False
    key = message.message_id or f"pk:{message_pk}"
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64
    return value < share


class RouteStage:
    """Decides where each message goes; human and skip end the message's pass."""

    name = "route"

    def __init__(self, config: Config, *, llm_available: bool) -> None:
        self.config = config
        self.settings = config.route
        self.llm_available = llm_available
        self.own_addresses = own_addresses(config)

    def run(self, case: Case) -> Step:
        return self.run_many([case])[0]

    def run_many(self, cases: Sequence[Case]) -> list[Step]:
        """Route several messages; messages of one batch see each other's thread history."""
        seen: list[ThreadKey] = []
        steps = []
        for case in cases:
            message = case.parsed()
            key = ThreadKey.of(case.message_pk, message)
            earlier = case.earlier_in_thread + count_in_batch(key, seen)
            seen.append(key)
            data = RouteInput(
                message=message, classification=case.classification,
                extraction=case.extraction, generated=case.generated, account=case.account,
                mailbox=case.mailbox, earlier_in_thread=earlier,
                own_addresses=self.own_addresses,
            )
            reasons = apply_rules(data, self.settings)
            # A sample is never worth a person's time: only taken when the cloud can be used.
            if (not reasons
                    and in_quality_sample(case.message_pk, message, self.settings.quality_sample)
                    and self._cloud_block(case.account, case.mailbox) is None):
                reasons = [RouteReason(
                    "quality_sample", "a sample of the mail the small model answers alone, "
                    "for the cloud LLM to answer and teach it (route.quality_sample)", LLM,
                    {"share": self.settings.quality_sample})]
            wants_cloud = any(r.action == LLM for r in reasons)
            block = self._cloud_block(case.account, case.mailbox) if wants_cloud else None
            steps.append(self._step(case, decide(reasons, cloud_block=block)))
        return steps

    def _cloud_block(self, account: str | None, mailbox: str | None) -> RouteReason | None:
        """Why this message may not go to the cloud LLM at all, whatever the budget."""
        rule = no_cloud(self.config, account, mailbox)
        if rule is not None:
            return RouteReason("no_cloud", f"personal data must not leave the server "
                               f"(route.no_cloud: {rule})", HUMAN, {"rule": rule})
        if not self.llm_available:
            return RouteReason("llm_not_configured", "no cloud LLM is configured (llm.base_url)",
                               HUMAN)
        return None

    def _step(self, case: Case, decision: RouteDecision) -> Step:
        routed = case.with_(decision=decision)
        details = decision.to_json()
        if decision.route == SKIP:
            return Step(routed, "skipped", details=details, stop=True)
        if decision.route == HUMAN:
            log.info("routed to a person: %s", decision.summary())
            return Step(routed, HUMAN, details=details, stop=True)
        return Step(routed, decision.route, status=MessageStatus.ROUTED,
                    reason=decision.summary() if decision.reasons else None, details=details)
