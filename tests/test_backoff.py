import random

import pytest

from mailbot.backoff import backoff_delay


def test_delay_grows_exponentially_and_is_capped() -> None:
    rng = random.Random(7)
    ceilings = [max(backoff_delay(a, base=1.0, cap=30.0, rng=rng) for _ in range(500))
                for a in range(8)]
    # The largest draw approaches each ceiling: 1, 2, 4, 8, 16, then the cap of 30.
    for got, ceiling in zip(ceilings, [1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert 0.9 * ceiling <= got <= ceiling


def test_jitter_spreads_retries() -> None:
    rng = random.Random(1)
    draws = {round(backoff_delay(3, base=2.0, cap=60.0, rng=rng), 6) for _ in range(50)}
    assert len(draws) > 40
    assert all(0 <= d <= 16 for d in draws)


def test_huge_attempt_numbers_stay_finite() -> None:
    assert backoff_delay(10_000, base=2.0, cap=300.0, rng=random.Random(0)) <= 300.0


@pytest.mark.parametrize("kwargs", [{"attempt": -1}, {"attempt": 0, "base": 0}])
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        backoff_delay(**kwargs)
