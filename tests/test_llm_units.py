"""The LLM client's small parts: Retry-After parsing, the breaker's states, prompt defusing."""

from __future__ import annotations

import email.utils

import pytest

from mailbot.errors import ConfigError, PermanentError, TransientError
from mailbot.llm import (
    BreakerState,
    CircuitBreaker,
    LLMResponseInvalid,
    LLMUnavailable,
    PromptRenderer,
    RetryPolicy,
    classification_schema,
    neutralise,
    retry_after_seconds,
)
from mailbot.llm.schemas import schema_errors

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "5"}, 5.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),  # the precise one wins
        ({"Retry-After": email.utils.formatdate(NOW + 42, usegmt=True)}, 42.0),
        ({"Retry-After": email.utils.formatdate(NOW - 42, usegmt=True)}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({"retry-after-ms": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_header(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == expected


def test_retry_policy_prefers_the_server_and_caps_its_own_backoff() -> None:
    import random

    policy = RetryPolicy(attempts=5, base=1.0, cap=3.0)
    assert policy.delay(0, 12.0) == 12.0
    draws = [policy.delay(4, None, random.Random(i)) for i in range(200)]
    assert max(draws) <= 3.0 and max(draws) > 2.5


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_states() -> None:
    clock = Clock()
    breaker = CircuitBreaker("http://x/v1", failure_threshold=2, cooldown=10, clock=clock)
    breaker.before_call()
    breaker.record_failure("HTTP 500")
    breaker.record_success()  # a success resets the count
    breaker.record_failure("HTTP 500")
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure("timeout")
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(LLMUnavailable, match=r"another 10 s.*last: timeout"):
        breaker.before_call()
    clock.now = 10.0
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the one trial
    with pytest.raises(LLMUnavailable, match="trial call"):
        breaker.before_call()  # nobody else while it runs
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()


def test_breaker_trial_that_never_reports_back_is_given_up() -> None:
    clock = Clock()
    breaker = CircuitBreaker("e", failure_threshold=1, cooldown=5, clock=clock)
    breaker.record_failure("HTTP 503")
    clock.now = 5.0
    breaker.before_call()  # the trial's caller dies without reporting
    clock.now = 7.0
    with pytest.raises(LLMUnavailable):
        breaker.before_call()
    clock.now = 10.0
    breaker.before_call()  # a new trial after another cool-down


def test_errors_sit_in_the_hierarchy() -> None:
    assert issubclass(LLMUnavailable, TransientError)
    assert issubclass(LLMResponseInvalid, PermanentError)


def test_neutralise_defuses_every_spelling_of_our_delimiters() -> None:
    text = ("a</customer_email>b<CUSTOMER_EMAIL>c< / customer_email >d<reference x=1>"
            "e</body><b>bold</b> 3 < 4")
    out = neutralise(text)
    for tag in ("</customer_email>", "<CUSTOMER_EMAIL>", "< / customer_email >", "<reference",
                "</body>"):
        assert tag not in out
    assert "<b>bold</b> 3 < 4" in out  # other markup and comparisons are left alone
    assert out.replace("\u2039", "<") == text  # nothing else changes


def test_templates_are_sandboxed_and_strict(tmp_path) -> None:
    renderer = PromptRenderer()
    with pytest.raises(ConfigError, match="undefined"):
        renderer.render("classify_user.j2", {})  # a missing variable fails loudly
    for name in ("classify_system.j2", "classify_user.j2", "extract_system.j2",
                 "extract_user.j2", "reply_system.j2", "reply_user.j2", "repair.j2"):
        (tmp_path / name).write_text("{{ email.__class__.__mro__ }}")
    with pytest.raises(ConfigError, match="unsafe|not safely"):
        PromptRenderer(tmp_path).render("classify_user.j2", {"email": {"body": "x"}})
    (tmp_path / "repair.j2").unlink()
    with pytest.raises(ConfigError, match="lacks the prompt templates repair.j2"):
        PromptRenderer(tmp_path)


def test_classification_schema_validation() -> None:
    schema = classification_schema(["a", "b"])
    good = {"intent": "a", "priority": "low", "sentiment": "neutral", "language": "de",
            "confidence": 0.3}
    assert schema_errors(good, schema) == []
    wrong = schema_errors({**good, "intent": "c"}, schema)
    assert wrong == ["intent: 'c' is not one of ['a', 'b']"]
    assert any("confidence" in e for e in schema_errors({**good, "confidence": 2}, schema))
    assert any("extra" in e or "Additional" in e
               for e in schema_errors({**good, "note": "x"}, schema))


def test_llm_settings_are_validated() -> None:
    from mailbot.config import LLMSettings, config_from_dict
    from mailbot.llm import LLMClient

    with pytest.raises(ConfigError, match="llm: model is required when base_url is set"):
        config_from_dict({"llm": {"base_url": "https://api.example.com/v1"}})
    with pytest.raises(ConfigError, match="at most one of api_key_env or api_key_file"):
        config_from_dict({"llm": {"base_url": "https://x/v1", "model": "m",
                                  "api_key_env": "A", "api_key_file": "/k"}})
    with pytest.raises(ConfigError, match="must start with http"):
        config_from_dict({"llm": {"base_url": "api.example.com", "model": "m"}})
    with pytest.raises(ConfigError, match="MISSING_KEY_VAR.*is not set"):
        LLMClient(LLMSettings(base_url="http://127.0.0.1:9/v1", model="m",
                              api_key_env="MISSING_KEY_VAR"))
    with pytest.raises(ConfigError, match="llm.base_url is empty"):
        LLMClient(LLMSettings())
