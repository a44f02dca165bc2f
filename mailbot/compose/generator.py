"""Generated drafts: the generator writes the reply body, grounded in the knowledge base.

`GenerateStage` runs after retrieval and before routing, so that the router can act on a
body that failed its quality gates (the `generation_failed` reason). On the SLM route the
draft stage then uses the generated body when it passed every gate, and the intent's
template when it did not; either way the gate results go on the draft.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailbot.audit.cost import cpu_cost
from mailbot.classify.language import UNDETERMINED
from mailbot.compose.gates import GateSettings, check_body
from mailbot.compose.prompts import SlmPrompts, TextGenerator
from mailbot.compose.reply import field_values
from mailbot.compose.safety import ReplyContext, SafetyChecker
from mailbot.errors import ConfigError, ModelError
from mailbot.llm.prompts import email_context, neutralise
from mailbot.pipeline.case import Case, Step

if TYPE_CHECKING:
    from mailbot.config import Config
    from mailbot.parse.message import InboundMessage

log = logging.getLogger(__name__)

REPLY_TEMPLATE = "slm_reply.j2"
# Enough of the email and the passages for a reply; a small model's context is short.
MAX_EMAIL_CHARS = 3000
MAX_PASSAGE_CHARS = 1200
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
    "nl": "Dutch", "pt": "Portuguese", "pl": "Polish", "sv": "Swedish", "da": "Danish",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class GeneratedReply:
    """A reply body the generator wrote and whether it passed its quality gates."""

    body: str
    passed: bool
    gates: Mapping[str, Any]  # GateReport.to_json(): what the router and the draft record
    model: str
    model_version: str
    reason: str | None = None  # why it cannot be used (None when it passed)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    latency_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """What the generate stage's audit event keeps (the body included)."""
        return {"passed": self.passed, "reason": self.reason, "model": self.model,
                "model_version": self.model_version, "body": self.body,
                "gates": dict(self.gates), "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens,
                "latency_ms": round(self.latency_s * 1000, 1)}


@dataclass(frozen=True, slots=True)
class ReplyRequest:
    """What one reply is written from."""

    message: InboundMessage
    intent: str | None
    language: str
    passages: Sequence[Any] = ()
    extraction: Any = None
    own_addresses: Sequence[str] = field(default_factory=tuple)


class ReplyGenerator:
    """Prompts the generator for reply bodies and judges each by the gates."""

    def __init__(
        self,
        generator: TextGenerator,
        prompts: SlmPrompts,
        safety: SafetyChecker,
        *,
        gates: GateSettings,
        max_new_tokens: int = 384,
        company: str = "",
        min_passage_score: float = 0.0,
    ) -> None:
        self.generator = generator
        self.prompts = prompts
        self.safety = safety
        self.gates = gates
        self.max_new_tokens = max_new_tokens
        self.company = company
        self.min_passage_score = min_passage_score

    def grounded(self, passages: Sequence[Any]) -> list[Any]:
        """The passages good enough to ground a reply (as the templates get them)."""
        return [p for p in passages if getattr(p, "score", 0.0) >= self.min_passage_score]

    def prompt(self, request: ReplyRequest) -> str:
        """The prompt for one reply: instructions, passages, facts and the delimited email."""
        return self.prompts.render(REPLY_TEMPLATE, self._context(request))

    def _context(self, request: ReplyRequest) -> dict[str, Any]:
        message = request.message
        body = (message.new_text or message.text)[:MAX_EMAIL_CHARS]
        facts = {name: neutralise(str(value))
                 for name, value in field_values(request.extraction).items()}
        return {
            "company": self.company,
            "language": request.language,
            "language_name": _language_name(request.language),
            "intent": request.intent,
            "references": [neutralise(getattr(p, "text", ""))[:MAX_PASSAGE_CHARS]
                           for p in self.grounded(request.passages)],
            "facts": facts,
            "email": email_context(message.subject, body),
        }

    def write_many(self, requests: Sequence[ReplyRequest]) -> list[GeneratedReply]:
        """One reply per request, generated as one batch and gated one by one."""
        if not requests:
            return []
        prompts = [self.prompt(r) for r in requests]
        # The instructions are the same for every email: the model reads them once.
        prefix = self.prompts.prefix(REPLY_TEMPLATE, self._context(requests[0]))
        try:
            generations = self.generator.generate(
                prompts, max_new_tokens=self.max_new_tokens, prefix=prefix
            )
        except (ModelError, RuntimeError, ValueError) as exc:
            log.warning("the generator failed: %s", exc)
            return [self._failed(f"the generator failed: {exc}") for _ in requests]
        return [self.judge(r, g.text, finished=g.finished, prompt_tokens=g.prompt_tokens,
                           generated_tokens=g.generated_tokens, latency_s=g.latency_s)
                for r, g in zip(requests, generations, strict=True)]

    def judge(
        self,
        request: ReplyRequest,
        text: str,
        *,
        finished: bool = True,
        prompt_tokens: int = 0,
        generated_tokens: int = 0,
        latency_s: float = 0.0,
    ) -> GeneratedReply:
        """Gate one generated text (its greeting and sign-off removed: the layout adds ours)."""
        from mailbot.compose.trim import trim_reply

        body = trim_reply(text)
        context = ReplyContext(
            message=request.message, extraction=request.extraction,
            passages=[getattr(p, "text", "") for p in self.grounded(request.passages)],
            own_addresses=tuple(request.own_addresses), language=request.language,
        )
        report = check_body(body, context, language=request.language, settings=self.gates,
                            safety=self.safety, finished=finished)
        reason = None if report.passed else f"failed its quality gates: {report.summary()}"
        if reason:
            log.info("generated reply not used (%s)", ", ".join(report.failed))
        return GeneratedReply(
            body=body, passed=report.passed, gates=report.to_json(), model=self.generator.name,
            model_version=self.generator.version, reason=reason, prompt_tokens=prompt_tokens,
            generated_tokens=generated_tokens, latency_s=latency_s,
        )

    def _failed(self, reason: str) -> GeneratedReply:
        return GeneratedReply(body="", passed=False, gates={"passed": False, "error": reason},
                              model=self.generator.name, model_version=self.generator.version,
                              reason=reason)


class GenerateStage:
    """The generator's reply for each message, with its gate results (never stops a message:
    a failed body falls back to the template, or the router escalates it)."""

    name = "generate"

    def __init__(self, config: Config, writer: ReplyGenerator) -> None:
        from mailbot.route.stage import own_addresses

        self.config = config
        self.writer = writer
        self.own_addresses = own_addresses(config)

    def run(self, case: Case) -> Step:
        return self.run_many([case])[0]

    def run_many(self, cases: Sequence[Case]) -> list[Step]:
        """Write the replies of several messages in one generator batch."""
        requests = [self._request(case) for case in cases]
        started = time.process_time()
        replies = self.writer.write_many(requests)
        cpu_seconds = (time.process_time() - started) / max(1, len(cases))
        cost = cpu_cost(cpu_seconds, self.config.cost.cpu_hour)
        steps = []
        for case, reply in zip(cases, replies, strict=True):
            # The body is the customer's business: in message_facts, not in the events.
            details = {k: v for k, v in reply.to_json().items() if k != "body"}
            steps.append(Step(
                case.with_(generated=reply), "ok" if reply.passed else "gates_failed",
                reason=None if reply.passed else f"generated reply {reply.reason}",
                details=details, facts={"generated_body": reply.body}, model=reply.model,
                model_version=reply.model_version, tokens_in=reply.prompt_tokens,
                tokens_out=reply.generated_tokens, cost=cost,
            ))
        return steps

    def _request(self, case: Case) -> ReplyRequest:
        classification = case.classified()
        sender = self.config.reply_address(case.account).lower()
        return ReplyRequest(
            message=case.parsed(), intent=classification.intent.label,
            language=classification.language, passages=case.passages,
            extraction=case.extraction,
            own_addresses=tuple(sorted({sender, *self.own_addresses})),
        )


def _language_name(code: str) -> str:
    if code == UNDETERMINED:
        return "the language of the customer's email"
    return LANGUAGE_NAMES.get(code, code)


def build_generate_stage(config: Config, generator: TextGenerator | None) -> GenerateStage:
    """The generate stage as `[drafts]` asks for it; a ConfigError names what is missing."""
    settings = config.drafts
    if generator is None:
        raise ConfigError("drafts.use_generator = true needs a generator: set models.generator "
                          "to a converted model's directory name (`mailbot model convert`)")
    if settings.min_chars >= settings.max_chars:
        raise ConfigError(f"drafts.min_chars = {settings.min_chars} must be below "
                          f"drafts.max_chars = {settings.max_chars}")
    model_dir = getattr(generator, "model_dir", None)
    writer = ReplyGenerator(
        generator, SlmPrompts.for_model(config, model_dir), SafetyChecker.from_config(config),
        gates=GateSettings(settings.min_chars, settings.max_chars,
                           tuple(config.classifier.languages)),
        max_new_tokens=settings.generator_max_new_tokens, company=settings.company,
        min_passage_score=settings.min_passage_score,
    )
    return GenerateStage(config, writer)


def draft_gates(generated: GeneratedReply, *, used: bool, route: str = "slm") -> dict[str, Any]:
    """What a draft records about the generator: its gates, whether its body was used and,
    when not, what the reply was drafted from instead."""
    if used:
        fallback = None
    elif route == "llm":
        fallback = "the cloud LLM wrote the reply"
    else:
        fallback = f"drafted from the template: the generated reply {generated.reason}"
    return {"generator": generated.model, "generator_version": generated.model_version,
            "used": used, "fallback": fallback, **dict(generated.gates)}
