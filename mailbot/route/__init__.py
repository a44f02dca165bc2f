"""Routing: which mail the small model answers, which the cloud LLM, which a person.

`RouteStage` decides (`RouteDecision` with its `RouteReason`s), `EscalateStage` calls the
cloud LLM with personal data pseudonymised, and `mailbot.compose.safety` checks every reply body
before it becomes a draft.
"""

from mailbot.llm.escalate import EscalateStage, Escalation, trim_reply
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
from mailbot.route.history import BudgetGate, LedgerLookup, ThreadKey
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
    "BudgetGate",
    "EscalateStage",
    "Escalation",
    "LedgerLookup",
    "RouteDecision",
    "RouteInput",
    "RouteReason",
    "RouteStage",
    "ThreadKey",
    "apply_rules",
    "decide",
    "no_cloud",
    "own_addresses",
    "thread_subject",
    "trim_reply",
]
