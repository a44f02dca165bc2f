"""What the router decides about one message, and why.

A decision is one of four routes; every reason behind it carries a stable machine-readable
code (for SQL and dashboards) and a sentence for the agent who picks the message up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RouteName = Literal["slm", "llm", "human", "skip"]
SLM: RouteName = "slm"
LLM: RouteName = "llm"
HUMAN: RouteName = "human"
SKIP: RouteName = "skip"

# Why a message would go to the cloud LLM (each can be set to "llm", "human" or "off").
ESCALATION_CODES = (
    "low_confidence",
    "out_of_scope",
    "generation_failed",
    "missing_fields",
    "legal_threat",
    "data_protection",
    "large_cancellation",
    "angry_high_priority",
    "vip_sender",
    "long_email",
    "repeated_contact",
    "quality_sample",
)
# Why it goes to a person instead of the cloud LLM.
HUMAN_CODES = (
    "llm_not_configured",
    "budget_exhausted",
    "no_cloud",
    "llm_failed",
    "llm_interrupted",
    "unsafe_draft",
    "no_draft",
)
SKIP_CODES = ("own_address", "skip_sender")

# The message status text of mail that waits for a person (status "routed").
NEEDS_HUMAN_PREFIX = "needs a person"


@dataclass(frozen=True, slots=True)
class RouteReason:
    """One reason behind a route: a stable code, a sentence, and what it asks for."""

    code: str
    text: str
    action: RouteName  # the route this reason asks for on its own
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """`{"code", "text", "action", "details"}`."""
        return {"code": self.code, "text": self.text, "action": self.action,
                "details": dict(self.details)}


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one message goes and every reason for it (empty for a plain SLM case)."""

    route: RouteName
    reasons: tuple[RouteReason, ...] = ()

    @property
    def codes(self) -> list[str]:
        """The reason codes, in the order they were found."""
        return [r.code for r in self.reasons]

    def summary(self) -> str:
        """One line for the message's status reason."""
        texts = "; ".join(r.text for r in self.reasons)
        if self.route == HUMAN:
            return f"{NEEDS_HUMAN_PREFIX}: {texts}" if texts else NEEDS_HUMAN_PREFIX
        return f"{self.route}: {texts}" if texts else self.route

    def with_reason(self, reason: RouteReason, route: RouteName | None = None) -> RouteDecision:
        """The same decision with one more reason (and, optionally, a new route)."""
        return RouteDecision(route or self.route, (*self.reasons, reason))

    def to_json(self) -> dict[str, Any]:
        """`{"route", "codes", "reasons": [...]}` as the audit log and `mailbot route` show it."""
        return {"route": self.route, "codes": self.codes,
                "reasons": [r.to_json() for r in self.reasons]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RouteDecision:
        """The decision `to_json` wrote."""
        return cls(data["route"], tuple(
            RouteReason(r["code"], r["text"], r["action"], dict(r.get("details") or {}))
            for r in data.get("reasons", ())))


def decide(reasons: list[RouteReason], *, cloud_block: RouteReason | None) -> RouteDecision:
    """Combine reasons: skip beats human beats llm beats slm.

    `cloud_block` says why the cloud LLM cannot be used for this message (none configured,
    budget spent, a no-cloud rule); an escalation then goes to a person with that reason too.
    """
    actions = {r.action for r in reasons}
    if SKIP in actions:
        return RouteDecision(SKIP, tuple(r for r in reasons if r.action == SKIP))
    if HUMAN in actions:
        return RouteDecision(HUMAN, tuple(reasons))
    if LLM in actions:
        if cloud_block is not None:
            return RouteDecision(HUMAN, (*reasons, cloud_block))
        return RouteDecision(LLM, tuple(reasons))
    return RouteDecision(SLM, tuple(reasons))
