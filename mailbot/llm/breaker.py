"""A circuit breaker per LLM endpoint, shared by every client in the process.

Closed: calls go through. After `failure_threshold` failed requests in a row it opens: calls
are refused at once, without touching the network, for `cooldown` seconds. Then it is
half-open: one trial call goes through; success closes it, failure opens it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum

from mailbot.llm.errors import LLMUnavailable


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Counts consecutive failures of one endpoint and refuses calls while it is open."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cooldown <= 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started: float | None = None
        self._last_failure = ""

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose cool-down has passed reads as half-open)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._cooled_down():
                return BreakerState.HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def before_call(self) -> None:
        """Let a call through, or raise `LLMUnavailable` while the breaker is open."""
        with self._lock:
            now = self._clock()
            if self._state is BreakerState.CLOSED:
                return
            if self._state is BreakerState.OPEN:
                if not self._cooled_down():
                    wait = self._opened_at + self.cooldown - now
                    raise LLMUnavailable(
                        f"cloud LLM at {self.name} is not being called for another {wait:.0f} s: "
                        f"the circuit breaker opened after {self._failures} failed requests "
                        f"in a row (last: {self._last_failure})",
                        reason="breaker_open",
                        retry_in=wait,
                    )
                self._state = BreakerState.HALF_OPEN
                self._trial_started = now
                return
            # Half-open: one trial at a time. A trial that never reported back (its caller
            # died) is given up after one cool-down, so the breaker cannot stay stuck.
            if self._trial_started is not None and now - self._trial_started < self.cooldown:
                raise LLMUnavailable(
                    f"cloud LLM at {self.name} is being tested with one trial call after "
                    f"{self._failures} failed requests in a row; not calling it meanwhile",
                    reason="breaker_open",
                    retry_in=self.cooldown - (now - self._trial_started),
                )
            self._trial_started = now

    def record_success(self) -> None:
        """The endpoint answered (even with an answer we reject): close the breaker."""
        with self._lock:
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._trial_started = None

    def record_failure(self, description: str) -> None:
        """The endpoint failed (timeout, 5xx, 429, connection); maybe open the breaker."""
        with self._lock:
            self._failures += 1
            self._last_failure = description
            if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
                self._state = BreakerState.OPEN
                self._opened_at = self._clock()
                self._trial_started = None

    def _cooled_down(self) -> bool:
        return self._clock() >= self._opened_at + self.cooldown


_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def breaker_for(
    endpoint: str,
    *,
    failure_threshold: int,
    cooldown: float,
    clock: Callable[[], float] = time.monotonic,
) -> CircuitBreaker:
    """The process-wide breaker of an endpoint (created on first use; settings follow the
    latest caller, so a reloaded config takes effect)."""
    key = endpoint.rstrip("/")
    with _registry_lock:
        breaker = _registry.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                key, failure_threshold=failure_threshold, cooldown=cooldown, clock=clock
            )
            _registry[key] = breaker
        else:
            breaker.failure_threshold = failure_threshold
            breaker.cooldown = cooldown
        return breaker


def reset_breakers() -> None:
    """Forget every endpoint's breaker (tests; an operator's reload)."""
    with _registry_lock:
        _registry.clear()
