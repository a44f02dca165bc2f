"""The cloud LLM client: one OpenAI-compatible Chat Completions endpoint, used carefully.

Our own retry policy (the openai package's retries are off): capped exponential backoff with
jitter, honouring Retry-After; explicit connect and read timeouts; a circuit breaker shared
per endpoint; structured JSON answers validated against their schema with one repair request.
Every call returns the exact request it sent, the answer, tokens, latency and cost.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mailbot.audit.cost import TokenPrices, estimate_tokens, llm_cost
from mailbot.config import Config, CostSettings, LLMSettings
from mailbot.errors import ConfigError
from mailbot.llm.breaker import CircuitBreaker, breaker_for
from mailbot.llm.errors import LLMRequestRejected, LLMResponseInvalid, LLMUnavailable
from mailbot.llm.prompts import ChatMessage, PromptRenderer, email_context, neutralise
from mailbot.llm.retry import RetryPolicy, retry_after_seconds
from mailbot.llm.schemas import (
    DEFAULT_FIELDS,
    PRIORITIES,
    SENTIMENTS,
    FieldSpec,
    classification_schema,
    fields_schema,
    schema_errors,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Status codes worth retrying: request timeout, conflict (OpenAI's guidance), rate limit, 5xx.
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class LLMCall:
    """One logical call to the cloud LLM, as it should appear in the audit log."""

    task: str  # "classify", "extract", "reply", ...
    request: Mapping[str, Any]  # the JSON body of the last request, messages included
    response_text: str  # the answer's text as received
    model: str  # the model asked for (config)
    response_model: str  # the model that answered, as the endpoint named it
    tokens_in: int  # summed over every request that got an answer (repair included)
    tokens_out: int
    tokens_estimated: bool  # the endpoint sent no usage; counted from text length
    latency_ms: float  # from the first request to the answer, waits included
    cost: float
    attempts: int  # HTTP requests made
    repaired: bool  # a second request asked to fix a malformed answer
    finish_reason: str | None = None
    request_id: str | None = None

    @property
    def messages(self) -> list[dict[str, str]]:
        """The exact messages sent in the last request."""
        return list(self.request.get("messages", ()))


@dataclass(frozen=True, slots=True)
class LLMResult(Generic[T]):
    """A validated answer and the call that produced it."""

    value: T
    call: LLMCall


@dataclass(frozen=True, slots=True)
class LLMClassification:
    """The cloud LLM's classification of one email."""

    intent: str
    priority: str
    sentiment: str
    language: str
    confidence: float


class LLMClient:
    """A client of one OpenAI-compatible endpoint; build once at start-up and reuse."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        prices: TokenPrices | None = None,
        chars_per_token: float = 4.0,
        renderer: PromptRenderer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if not settings.enabled:
            raise ConfigError("no cloud LLM configured: llm.base_url is empty")
        try:
            import openai
        except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
            raise LLMUnavailable(
                "the 'openai' package is not installed; pip install 'openai>=3.0'",
                reason="not_installed",
            ) from None
        self.settings = settings
        self.prices = prices or TokenPrices.from_settings(CostSettings())
        self.chars_per_token = chars_per_token
        self.renderer = renderer or PromptRenderer(settings.prompts_dir or None)
        self.policy = RetryPolicy(
            attempts=settings.attempts,
            base=settings.retry_base_seconds,
            cap=settings.retry_max_seconds,
            max_retry_after=settings.max_retry_after_seconds,
        )
        self.breaker = breaker or breaker_for(
            settings.base_url,
            failure_threshold=settings.breaker_failures,
            cooldown=settings.breaker_cooldown_seconds,
        )
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._openai = openai
        timeout = openai.Timeout(
            settings.read_timeout,
            connect=settings.connect_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        # Local servers (vLLM, Ollama) take any key; the package insists on one.
        self._client = openai.OpenAI(
            api_key=settings.resolve_api_key() or "unused",
            base_url=settings.base_url,
            timeout=timeout,
            max_retries=0,  # the retry policy is ours (above), so it is uniform and tested
        )

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> LLMClient | None:
        """The client the config describes, or None when no cloud LLM is configured."""
        if not config.llm.enabled:
            return None
        kwargs.setdefault("prices", TokenPrices.from_settings(config.cost))
        kwargs.setdefault("chars_per_token", config.cost.chars_per_token)
        if config.llm.prompts_dir and "renderer" not in kwargs:
            kwargs["renderer"] = PromptRenderer(config.base_dir / config.llm.prompts_dir)
        return cls(config.llm, **kwargs)

    @property
    def endpoint(self) -> str:
        return self.settings.base_url

    # --- the tasks -------------------------------------------------------------------------

    def classify(
        self,
        subject: str | None,
        body: str,
        labels: Sequence[str],
        *,
        label_descriptions: Mapping[str, str] | None = None,
        request_key: str | None = None,
    ) -> LLMResult[LLMClassification]:
        """Intent (one of `labels`), priority, sentiment, language and confidence.

        `request_key` names the call (sent as an `Idempotency-Key` header) so that an
        endpoint, or a proxy in front of it, can tell a repeated request from a new one.
        """
        context = {
            "email": email_context(subject, body),
            "labels": list(labels),
            "label_descriptions": dict(label_descriptions or {}),
            "priorities": list(PRIORITIES),
            "sentiments": list(SENTIMENTS),
        }
        messages = self.renderer.conversation("classify", context)
        result = self.complete_json("classify", messages, classification_schema(labels),
                                    request_key=request_key)
        answer = result.value
        value = LLMClassification(
            intent=answer["intent"],
            priority=answer["priority"],
            sentiment=answer["sentiment"],
            language=answer["language"],
            confidence=float(answer["confidence"]),
        )
        return LLMResult(value, result.call)

    def extract(
        self, subject: str | None, body: str, fields: Sequence[FieldSpec] = DEFAULT_FIELDS
    ) -> LLMResult[dict[str, Any]]:
        """The named fields as stated in the email (None where it does not say)."""
        context = {"email": email_context(subject, body), "fields": list(fields)}
        messages = self.renderer.conversation("extract", context)
        return self.complete_json("extract", messages, fields_schema(fields))

    def draft_reply(
        self,
        subject: str | None,
        body: str,
        *,
        intent: str | None = None,
        language: str | None = None,
        facts: Mapping[str, Any] | None = None,
        references: Sequence[str] = (),
        company: str = "our company",
        signature: str = "",
        request_key: str | None = None,
    ) -> LLMResult[str]:
        """A plain-text reply body, grounded in the knowledge-base `references`."""
        context = {
            "email": email_context(subject, body),
            "intent": intent or "",
            "language": language or "",
            # Facts were read from the customer's text, so they are untrusted too.
            "facts": {k: neutralise(str(v)) for k, v in (facts or {}).items() if v is not None},
            "references": [neutralise(r) for r in references],
            "company": company,
            "signature": signature,
        }
        messages = self.renderer.conversation("reply", context)
        body_json = self._body(messages)
        completion, attempts, started = self._request(body_json, request_key)
        text, tokens_in, tokens_out, estimated = self._answer(completion, body_json)
        call = self._call("reply", body_json, completion, text, tokens_in, tokens_out,
                          estimated, started, attempts, repaired=False)
        if not text.strip():
            raise LLMResponseInvalid("the cloud LLM returned an empty reply", call=call)
        return LLMResult(text.strip(), call)

    # --- the machinery ---------------------------------------------------------------------

    def complete_json(
        self,
        task: str,
        messages: Sequence[ChatMessage],
        schema: Mapping[str, Any],
        *,
        request_key: str | None = None,
    ) -> LLMResult[dict[str, Any]]:
        """Ask for a JSON answer that fits `schema`; one repair request if it does not."""
        body = self._body(messages, task=task, schema=schema)
        completion, attempts, started = self._request(body, request_key)
        text, tokens_in, tokens_out, estimated = self._answer(completion, body)
        problem, value = self._check_json(text, schema)
        repaired = False
        if problem is not None:
            log.info("cloud LLM answer for %s unusable (%s); asking once to repair it",
                     task, problem)
            repair = ChatMessage("user", self.renderer.render("repair.j2", {"problem": problem}))
            body = self._body([*messages, ChatMessage("assistant", text), repair],
                              task=task, schema=schema)
            completion, more, _ = self._request(
                body, f"{request_key}:repair" if request_key else None)
            attempts += more
            text, t_in, t_out, est = self._answer(completion, body)
            tokens_in, tokens_out = tokens_in + t_in, tokens_out + t_out
            estimated = estimated or est
            problem, value = self._check_json(text, schema)
            repaired = True
        call = self._call(task, body, completion, text, tokens_in, tokens_out, estimated,
                          started, attempts, repaired=repaired)
        if problem is not None:
            raise LLMResponseInvalid(
                f"the cloud LLM's {task} answer is unusable after one repair request: {problem}",
                call=call,
            )
        assert value is not None
        return LLMResult(value, call)

    def list_models(self) -> list[str]:
        """The model names the endpoint offers (a cheap health check)."""
        self.breaker.before_call()
        try:
            page = self._client.models.list()
        except self._openai.APIError as exc:
            failure = self._classify_failure(exc)
            if failure is None:
                self.breaker.record_success()
                raise self._rejected(exc) from None
            self.breaker.record_failure(failure[0])
            raise LLMUnavailable(f"cloud LLM at {self.endpoint}: {failure[0]}",
                                 reason=failure[1]) from None
        self.breaker.record_success()
        return [m.id for m in page.data]

    def _body(
        self,
        messages: Sequence[ChatMessage],
        *,
        task: str | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [m.to_json() for m in messages],
            "temperature": self.settings.temperature,
            "max_completion_tokens": self.settings.max_output_tokens,
        }
        if schema is not None:
            if self.settings.structured_output == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": task or "answer", "schema": dict(schema),
                                    "strict": True},
                }
            else:
                body["response_format"] = {"type": "json_object"}
        return body

    def _request(self, body: Mapping[str, Any], key: str | None = None
                 ) -> tuple[Any, int, float]:
        """Send one request with retries; returns (completion, attempts, start time)."""
        started = self._clock()
        headers = {"Idempotency-Key": key} if key else None
        for attempt in range(self.policy.attempts):
            self.breaker.before_call()
            try:
                completion = self._client.chat.completions.create(**body,
                                                                  extra_headers=headers)
            except (self._openai.APIError, ValueError) as exc:  # ValueError: body not JSON
                failure = self._classify_failure(exc)
                if failure is None:
                    self.breaker.record_success()  # it answered; the request was wrong
                    raise self._rejected(exc) from None
                description, reason, retry_after = failure
                self.breaker.record_failure(description)
                left = self.policy.attempts - attempt - 1
                if left == 0:
                    raise LLMUnavailable(
                        f"cloud LLM at {self.endpoint} failed {attempt + 1} time(s); "
                        f"last: {description}",
                        reason=reason,
                        retry_in=retry_after,
                    ) from None
                if retry_after is not None and retry_after > self.policy.max_retry_after:
                    raise LLMUnavailable(
                        f"cloud LLM at {self.endpoint} asks to wait {retry_after:.0f} s "
                        f"({description}), longer than llm.max_retry_after_seconds = "
                        f"{self.policy.max_retry_after:g}",
                        reason=reason,
                        retry_in=retry_after,
                    ) from None
                delay = self.policy.delay(attempt, retry_after, self._rng)
                log.warning("cloud LLM at %s: %s; retrying in %.1f s (%d attempt(s) left)",
                            self.endpoint, description, delay, left)
                self._sleep(delay)
                continue
            if not getattr(completion, "choices", None):
                self.breaker.record_success()
                raise LLMResponseInvalid(
                    f"cloud LLM at {self.endpoint} answered without any choices"
                )
            self.breaker.record_success()
            return completion, attempt + 1, started
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _classify_failure(self, exc: Exception) -> tuple[str, str, float | None] | None:
        """(description, reason, Retry-After) for a failure worth retrying; None otherwise."""
        openai = self._openai
        if isinstance(exc, openai.APITimeoutError):
            limit = self.settings.read_timeout
            return f"no answer within the timeout ({limit:g} s read)", "timeout", None
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return f"cannot connect ({type(cause).__name__}: {cause})", "connection", None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status >= 500 or status in _RETRYABLE_STATUS:
                retry_after = retry_after_seconds(dict(exc.response.headers))
                reason = "rate_limited" if status == 429 else "server_error"
                wait = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
                return f"HTTP {status}{wait}", reason, retry_after
            return None
        # An answer that is not JSON at the HTTP level: a broken proxy or server.
        return f"unreadable response ({type(exc).__name__}: {exc})", "server_error", None

    def _rejected(self, exc: Exception) -> LLMRequestRejected:
        status = getattr(exc, "status_code", None)
        hint = {
            401: "check the API key (llm.api_key_env / llm.api_key_file)",
            403: "the key may not use this model or endpoint",
            404: f"check llm.base_url and that the model {self.settings.model!r} exists there",
        }.get(status or 0, "check the llm settings")
        message = getattr(exc, "message", str(exc))
        return LLMRequestRejected(
            f"cloud LLM at {self.endpoint} rejected the request (HTTP {status}): {message}; "
            f"{hint}",
            status_code=status,
        )

    def _answer(self, completion: Any, body: Mapping[str, Any]) -> tuple[str, int, int, bool]:
        """The answer's text and token counts (estimated when the endpoint sent none)."""
        message = completion.choices[0].message
        text = message.content or ""
        if not text and getattr(message, "refusal", None):
            log.warning("cloud LLM refused to answer: %s", message.refusal)
        usage = getattr(completion, "usage", None)
        if usage is not None and usage.prompt_tokens is not None:
            return text, int(usage.prompt_tokens), int(usage.completion_tokens or 0), False
        chars_in = sum(len(m["content"]) for m in body["messages"])
        return (
            text,
            estimate_tokens(chars_in, self.chars_per_token),
            estimate_tokens(len(text), self.chars_per_token),
            True,
        )

    @staticmethod
    def _check_json(
        text: str, schema: Mapping[str, Any]
    ) -> tuple[str | None, dict[str, Any] | None]:
        """(problem, value): the problem is None when the text is JSON that fits the schema."""
        if not text.strip():
            return "the answer was empty", None
        fenced = _FENCE.match(text)
        candidate = fenced.group(1) if fenced else text
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError as exc:
            return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", None
        errors = schema_errors(value, dict(schema))
        if errors:
            return "it does not fit the schema: " + "; ".join(errors[:5]), None
        return None, value

    def _call(
        self,
        task: str,
        body: Mapping[str, Any],
        completion: Any,
        text: str,
        tokens_in: int,
        tokens_out: int,
        estimated: bool,
        started: float,
        attempts: int,
        *,
        repaired: bool,
    ) -> LLMCall:
        choice = completion.choices[0]
        return LLMCall(
            task=task,
            request=body,
            response_text=text,
            model=self.settings.model,
            response_model=str(getattr(completion, "model", None) or self.settings.model),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            tokens_estimated=estimated,
            latency_ms=round((self._clock() - started) * 1000.0, 3),
            cost=llm_cost(tokens_in, tokens_out, self.prices),
            attempts=attempts,
            repaired=repaired,
            finish_reason=getattr(choice, "finish_reason", None),
            request_id=getattr(completion, "_request_id", None),
        )
