"""The cloud LLM for escalated mail: client, circuit breaker, prompts, audit and teacher labels.

Importing this package is cheap; the `openai` package is loaded when a client is built.
"""

from mailbot.llm.breaker import BreakerState, CircuitBreaker, breaker_for, reset_breakers
from mailbot.llm.client import LLMCall, LLMClassification, LLMClient, LLMResult
from mailbot.llm.errors import LLMRequestRejected, LLMResponseInvalid, LLMUnavailable
from mailbot.llm.prompts import ChatMessage, PromptRenderer, neutralise
from mailbot.llm.retry import RetryPolicy, retry_after_seconds
from mailbot.llm.schemas import DEFAULT_FIELDS, FieldSpec, classification_schema, fields_schema

__all__ = [
    "DEFAULT_FIELDS",
    "BreakerState",
    "ChatMessage",
    "CircuitBreaker",
    "FieldSpec",
    "LLMCall",
    "LLMClassification",
    "LLMClient",
    "LLMRequestRejected",
    "LLMResponseInvalid",
    "LLMResult",
    "LLMUnavailable",
    "PromptRenderer",
    "RetryPolicy",
    "breaker_for",
    "classification_schema",
    "fields_schema",
    "neutralise",
    "reset_breakers",
    "retry_after_seconds",
]
