"""Routing: which mail the small model answers, which the cloud LLM, which a person.

`RouteStage` decides once (`RouteDecision` with its `RouteReason`s); `settle` says what then
becomes of the message. The cloud call itself is `mailbot.llm.escalate`'s, and
`mailbot.compose.safety` checks every reply body before it becomes a draft.
"""

from mailbot.route.decision import (
    ESCALATION_CODES,
    HUMAN,
    HUMAN_CODES,
    LLM,
    NEEDS_HUMAN_PREFIX,
    SKIP,
    SLM,
    RouteDecision,
    RouteReason,
    decide,
)
from mailbot.route.history import ThreadKey
from mailbot.route.outcome import Settlement, settle
from mailbot.route.rules import RULES, RouteInput, apply_rules, thread_subject
from mailbot.route.stage import RouteStage, no_cloud, own_addresses

__all__ = [
    "ESCALATION_CODES",
    "HUMAN",
    "HUMAN_CODES",
    "LLM",
    "NEEDS_HUMAN_PREFIX",
    "RULES",
    "SKIP",
    "SLM",
    "RouteDecision",
    "RouteInput",
    "RouteReason",
    "RouteStage",
    "Settlement",
    "ThreadKey",
    "apply_rules",
    "decide",
    "no_cloud",
    "own_addresses",
    "settle",
    "thread_subject",
]
