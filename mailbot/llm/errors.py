"""Errors of the cloud LLM client, placed in mailbot's hierarchy.

`LLMUnavailable` is transient (the router sends the mail to a human now and the endpoint may
be back later); `LLMResponseInvalid` and `LLMRequestRejected` are permanent for this request.
"""

from __future__ import annotations

from typing import Any

from mailbot.errors import ExitCode, PermanentError, TransientError


class LLMUnavailable(TransientError):
    """The cloud LLM cannot answer now: timeout, 5xx, 429 after retries, or the breaker is open."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, message: str, *, reason: str, retry_in: float | None = None) -> None:
        super().__init__(message)
        # A short machine-readable reason ("timeout", "server_error", "rate_limited",
        # "connection", "breaker_open") and, where known, seconds until it may work again.
        self.reason = reason
        self.retry_in = retry_in


class LLMRequestRejected(PermanentError):
    """The endpoint refused the request itself (bad key, unknown model, bad parameters)."""

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMResponseInvalid(PermanentError):
    """The answer was malformed or broke the schema, even after one repair request."""

    exit_code = ExitCode.DATA

    def __init__(self, message: str, *, call: Any = None) -> None:
        super().__init__(message)
        # The `LLMCall` of the last request, so its tokens and cost can still be recorded.
        self.call = call
