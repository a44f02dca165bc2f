"""How long to wait before the next attempt: the server's Retry-After, else our backoff."""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from mailbot.backoff import backoff_delay


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a server asked us to wait, from `retry-after-ms` or `Retry-After`.

    `Retry-After` may be delta-seconds or an HTTP date; a date in the past means 0.
    Returns None when no usable header is present. Header names are case-insensitive.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        now = time.time() if now is None else now
        return max(0.0, float(email.utils.mktime_tz(parsed)) - now)
    return value if math.isfinite(value) and value >= 0 else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts and waits for one logical call to the LLM."""

    attempts: int = 3  # total, the first included
    base: float = 1.0
    cap: float = 30.0
    # A server asking for a longer wait than this is treated as unavailable now.
    max_retry_after: float = 60.0

    def delay(
        self, retry: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Seconds before retry number `retry` (0-based): Retry-After wins when given."""
        if retry_after is not None:
            return retry_after
        return backoff_delay(retry, base=self.base, cap=self.cap, rng=rng)
