"""Field extraction by the generator: JSON under the field schema, checked in code.

The generator is asked for one JSON object of the schema's fields, values copied as written.
Every value is located in the text and validated with the rule extractor's recognisers and
check digits (mailbot/generate/validate.py). When the answer is not JSON, or a value fails,
the model is asked once more with the problem stated; what still fails after that is dropped
with its reason, never passed on. The result is merged with the `RuleExtractor`'s: rule
values win where both claim the same text, and values only the generator found carry a lower
confidence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailbot.compose.prompts import SlmPrompts, TextGenerator
from mailbot.config import FieldSpec
from mailbot.errors import ModelError
from mailbot.fields.dates import guess_language
from mailbot.fields.extract import FieldExtractor, RuleExtractor
from mailbot.fields.masking import mask_payment_data
from mailbot.fields.result import Extraction, FieldValue, Rejection
from mailbot.fields.schema import FieldSchema
from mailbot.fields.validate import CheckedValue, ValueProblem, check_value
from mailbot.llm.prompts import email_context, neutralise

log = logging.getLogger(__name__)

EXTRACT_TEMPLATE = "slm_extract.j2"
# Below every rule recogniser's confidence (0.75..0.99): on a tie the rule value is kept.
GENERATOR_CONFIDENCE = 0.6
MAX_NEW_TOKENS = 256
MAX_EMAIL_CHARS = 3000
ATTEMPTS = 2  # the answer, and one retry that states what was wrong with it

_TYPE_HINTS = {
    "money": "an amount with its currency, as written (e.g. €142.50)",
    "date": "a date, as written (e.g. 7 March 2026)",
    "email": "an e-mail address",
    "phone": "a phone number",
    "url": "a link",
    "iban": "an IBAN (bank account number)",
    "card": "a payment card number",
    "person": "a person's name",
    "address": "a postal address",
    "place": "a town, region or country",
}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One answer of the generator and what was wrong with it (nothing: it was used as is)."""

    output: str
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The answer and its problems for the audit log, card and IBAN digits masked."""
        return {
            "output": mask_payment_data(self.output[:2000]),
            "problems": [mask_payment_data(p) for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class GeneratorReport:
    """What the generator contributed to one extraction, and what was dropped and why."""

    model: str
    model_version: str
    attempts: tuple[Attempt, ...]
    added: tuple[str, ...] = ()  # "name=value" found by the generator alone
    confirmed: tuple[str, ...] = ()  # "name=value" the rules had found as well
    dropped: tuple[Rejection, ...] = ()
    reason: str | None = None  # why the whole answer was dropped
    prompt_tokens: int = 0
    generated_tokens: int = 0

    @property
    def retried(self) -> bool:
        return len(self.attempts) > 1

    def to_json(self) -> dict[str, Any]:
        """The report as the extract stage's audit event keeps it."""
        return {
            "model": self.model, "model_version": self.model_version,
            "retried": self.retried, "reason": self.reason,
            "added": list(self.added), "confirmed": list(self.confirmed),
            "dropped": [r.to_json() for r in self.dropped],
            "attempts": [a.to_json() for a in self.attempts],
            "prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
        }


class GeneratorExtractor:
    """A `FieldExtractor`: the rule extractor's values plus the generator's validated ones."""

    def __init__(
        self,
        generator: TextGenerator,
        prompts: SlmPrompts,
        *,
        rules: FieldExtractor | None = None,
        confidence: float = GENERATOR_CONFIDENCE,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> None:
        self.generator = generator
        self.prompts = prompts
        self.rules = rules or RuleExtractor()
        self.confidence = confidence
        self.max_new_tokens = max_new_tokens

    def extract(
        self,
        text: str,
        schema: FieldSchema,
        *,
        intent: str | None = None,
        reference: datetime | None = None,
        known_names: Sequence[str] = (),
    ) -> Extraction:
        """Find the schema's fields in `text`; relative dates resolve against `reference`."""
        return self.extract_with_report(text, schema, intent=intent, reference=reference,
                                        known_names=known_names)[0]

    def extract_with_report(
        self,
        text: str,
        schema: FieldSchema,
        *,
        intent: str | None = None,
        reference: datetime | None = None,
        known_names: Sequence[str] = (),
    ) -> tuple[Extraction, GeneratorReport]:
        """`extract`, plus the report of what the generator added, retried and dropped."""
        reference = reference or datetime.now(UTC)
        rules = self.rules.extract(text, schema, intent=intent, reference=reference,
                                   known_names=known_names)
        language = guess_language(text, schema.languages)
        taken = [v.span for values in rules.fields.values() for v in values]
        attempts: list[Attempt] = []
        checked: list[CheckedValue] = []
        failed: list[ValueProblem] = []
        fatal: str | None = None
        tokens = [0, 0]
        for _ in range(ATTEMPTS):
            problem = "; ".join(attempts[-1].problems) if attempts else None
            output = self._generate(text, schema, problem, tokens)
            proposals, fatal, problems = parse_answer(output, schema)
            values, value_problems = [], []
            for spec, proposed in proposals:
                try:
                    values.append(check_value(spec, proposed, text, schema, reference=reference,
                                              language=language, taken=taken))
                except ValueProblem as exc:
                    value_problems.append(exc)
            checked.extend(values)
            if fatal is None or not failed:
                failed = value_problems  # the latest parseable answer has the last word
            attempts.append(Attempt(output, tuple(
                [*([fatal] if fatal else []), *problems, *(str(p) for p in value_problems)])))
            if not attempts[-1].problems:
                break
        extraction, added, confirmed, dropped = combine(
            rules, checked, schema, intent=intent, confidence=self.confidence)
        dropped += [Rejection(p.name, p.raw, p.span, f"generator: {p.reason}") for p in failed]
        reason = (f"no usable answer after {len(attempts)} attempts: {fatal}"
                  if fatal is not None and not checked else None)
        if reason:
            log.info("generator's fields dropped: %s", reason)
        extraction = Extraction(extraction.fields, extraction.missing,
                                tuple(sorted((*extraction.rejected, *dropped),
                                             key=lambda r: r.span)))
        return extraction, GeneratorReport(
            model=self.generator.name, model_version=self.generator.version,
            attempts=tuple(attempts), added=tuple(added), confirmed=tuple(confirmed),
            dropped=tuple(dropped), reason=reason, prompt_tokens=tokens[0],
            generated_tokens=tokens[1],
        )

    def prompt(self, text: str, schema: FieldSchema, problem: str | None = None) -> str:
        """The extraction prompt; `problem` says what was wrong with the previous answer."""
        return self.prompts.render(EXTRACT_TEMPLATE, _context(text, schema, problem))

    def _generate(self, text: str, schema: FieldSchema, problem: str | None,
                  tokens: list[int]) -> str:
        try:
            context = _context(text, schema, problem)
            [generation] = self.generator.generate(
                [self.prompts.render(EXTRACT_TEMPLATE, context)],
                max_new_tokens=self.max_new_tokens,
                prefix=self.prompts.prefix(EXTRACT_TEMPLATE, context),
            )
        except (ModelError, RuntimeError, ValueError) as exc:
            log.warning("the generator failed: %s", exc)
            return ""
        tokens[0] += int(getattr(generation, "prompt_tokens", 0))
        tokens[1] += int(getattr(generation, "generated_tokens", 0))
        return str(generation.text)


def _context(text: str, schema: FieldSchema, problem: str | None) -> dict[str, Any]:
    return {
        "fields": [{"name": s.name, "hint": field_hint(s)} for s in schema.specs],
        # The analysed text holds the subject already (InboundMessage.text_with_signature).
        "email": email_context("", text[:MAX_EMAIL_CHARS]),
        # The problem may quote the model's answer, which may quote the email.
        "problem": neutralise(problem) if problem else None,
    }


def field_hint(spec: FieldSpec) -> str:
    """What the prompt says a field is."""
    if spec.type == "enum":
        return "one of " + ", ".join(spec.values)
    if spec.type in _TYPE_HINTS:
        return _TYPE_HINTS[spec.type]
    label = spec.name.replace("_", " ")
    cues = ", ".join(f'"{c}"' for c in spec.cues[:3])
    return f"the {label}" + (f" (written after words such as {cues})" if cues else "")


def parse_answer(
    output: str, schema: FieldSchema
) -> tuple[list[tuple[FieldSpec, object]], str | None, list[str]]:
    """The (field, value) pairs of an answer, why it is unusable as a whole (None when it is
    a JSON object), and what is wrong with some of its keys."""
    start = output.find("{")
    if start < 0:
        snippet = " ".join(output.split())[:60]
        return [], f"no JSON object in the answer ({snippet!r})", []
    try:
        data, _ = json.JSONDecoder().raw_decode(output, start)
    except json.JSONDecodeError as exc:
        return [], f"not valid JSON: {exc.msg} at character {exc.pos - start}", []
    if not isinstance(data, dict):
        return [], "the answer is not a JSON object", []
    proposals: list[tuple[FieldSpec, object]] = []
    problems: list[str] = []
    for key, value in data.items():
        spec = schema.spec(str(key))
        if spec is None:
            problems.append(f"{key!r} is not one of the fields")
            continue
        if value is None or value == "" or value == []:
            continue  # "not mentioned", said explicitly
        for item in value if isinstance(value, list) else [value]:
            proposals.append((spec, item))
    return proposals, None, problems


def combine(
    rules: Extraction,
    proposed: Sequence[CheckedValue],
    schema: FieldSchema,
    *,
    intent: str | None,
    confidence: float,
) -> tuple[Extraction, list[str], list[str], list[Rejection]]:
    """The rule values plus the generator's, with what was added, confirmed and dropped."""
    fields = {name: list(values) for name, values in rules.fields.items()}
    held: list[FieldValue] = [v for values in rules.fields.values() for v in values]
    added: list[str] = []
    confirmed: list[str] = []
    dropped: list[Rejection] = []
    seen: set[tuple[str, tuple[int, int]]] = set()
    for c in proposed:
        if (c.name, c.span) in seen:  # the same value again, in the retry's answer
            continue
        seen.add((c.name, c.span))
        label = f"{c.name}={c.value}"
        if any(v.value == c.value for v in fields.get(c.name, ())):
            if label not in confirmed and label not in added:
                confirmed.append(label)
            continue
        clash = next((v for v in held if _overlap(v.span, c.span)), None)
        refused = next((r for r in rules.rejected if _overlap(r.span, c.span)), None)
        reason = None
        if clash is not None:
            reason = f"the rules read this text as {clash.name} {clash.raw!r} (rule values win)"
        elif refused is not None:
            reason = f"the rules rejected this text: {refused.reason}"
        elif confidence < schema.min_confidence:
            reason = f"confidence {confidence} is below fields.min_confidence"
        if reason is not None:
            dropped.append(Rejection(c.name, c.raw, c.span, f"generator: {reason}"))
            continue
        value = FieldValue(c.name, c.value, c.type, c.span, confidence, c.raw)
        fields.setdefault(c.name, []).append(value)
        held.append(value)
        added.append(label)
    ordered = {name: tuple(sorted(values, key=lambda v: v.span)) for name, values in
               fields.items()}
    missing = tuple(n for n in schema.required_for(intent) if n not in ordered)
    return Extraction(ordered, missing, rules.rejected), added, confirmed, dropped


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def build_generator_extractor(config: Any, generator: TextGenerator | None) -> GeneratorExtractor:
    """The extractor `fields.use_generator` asks for; a ConfigError when no generator is set."""
    from mailbot.errors import ConfigError

    if generator is None:
        raise ConfigError("fields.use_generator = true needs a generator: set models.generator "
                          "to a converted model's directory name (`mailbot model convert`)")
    prompts = SlmPrompts.for_model(config, getattr(generator, "model_dir", None))
    return GeneratorExtractor(generator, prompts)
