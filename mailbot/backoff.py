"""Capped exponential backoff with jitter, as a small pure function."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    base: float = 2.0,
    cap: float = 300.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (0 = the first retry).

    "Full jitter": a uniform draw in [0, min(cap, base * 2**attempt)], so that many workers
    failing together do not retry in lockstep, and the wait never exceeds `cap`.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if base <= 0 or cap <= 0:
        raise ValueError("base and cap must be positive")
    # Clamp the exponent so a long outage never overflows a float.
    ceiling = min(cap, base * (2.0 ** min(attempt, 64)))
    draw = (rng or random).random()
    return ceiling * draw
