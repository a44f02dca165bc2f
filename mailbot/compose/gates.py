"""Quality gates on a reply body the generator wrote, before it may replace the template.

Each gate is measurable and cheap: the body has no leftover placeholder, mentions no link,
e-mail address or phone number that the customer's email, the knowledge-base passages and
the configuration do not (the safety checks decide that, see mailbot/safety.py), passes the
other safety checks, is in the customer's language, is neither too short nor too long, and
was not cut off at the token limit. A body that fails any gate is not used: the intent's
template is, and the gate results say why.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailbot.classify.language import UNDETERMINED, detect_language
from mailbot.compose.safety import ReplyContext, SafetyChecker

# Gate names, in the order they are reported.
GATES = ("complete", "length", "repetition", "placeholder", "link", "email", "phone", "safety",
         "language")
# A run of this many words said this often is a model stuck in a loop, not a reply.
_LOOP_WORDS = 4
_LOOP_TIMES = 3
_WORD = re.compile(r"\w+")

# What a template or a model leaves where a fact should have been.
_LEFTOVER = re.compile(
    r"\{\{|\}\}|\{%|%\}"  # template syntax
    r"|\[[^\[\]\n]{0,40}[A-Za-z][^\[\]\n]{0,40}\]"  # [Name], [order number], [Your Name]
    r"|<[A-Za-z][\w .-]{0,40}>"  # <name>, <customer name> (addresses and links hold @ or /)
    r"|\bX{3,}\b|\bx{3,}\b|_{3,}|\b(?:TODO|TBD|FIXME)\b|\blorem ipsum\b",
    re.IGNORECASE,
)
# Safety checks with a gate of their own; every other violation counts under "safety".
_OWN_GATE = {"placeholder": "placeholder", "link": "link", "email": "email", "phone": "phone"}


@dataclass(frozen=True, slots=True)
class GateSettings:
    """Length limits and the languages the detector may answer with."""

    min_chars: int = 40
    max_chars: int = 2000
    languages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate: passed or not, what it found, and a sentence saying why."""

    name: str
    passed: bool
    detail: str
    found: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """`{"passed", "detail", "found"}`."""
        return {"passed": self.passed, "detail": self.detail, "found": list(self.found)}


@dataclass(frozen=True, slots=True)
class GateReport:
    """Every gate's result for one generated body."""

    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[str]:
        """The names of the gates that failed."""
        return [r.name for r in self.results if not r.passed]

    def summary(self) -> str:
        """The failed gates' sentences as one line ("" when all passed)."""
        return "; ".join(r.detail for r in self.results if not r.passed)

    def to_json(self) -> dict[str, Any]:
        """`{"passed", "failed": [...], "results": {name: {...}}}`."""
        return {"passed": self.passed, "failed": self.failed,
                "results": {r.name: r.to_json() for r in self.results}}


def check_body(
    body: str,
    context: ReplyContext,
    *,
    language: str,
    settings: GateSettings,
    safety: SafetyChecker,
    finished: bool = True,
) -> GateReport:
    """Run every gate on a generated body; `language` is the customer's ("und": unknown)."""
    text = body.strip()
    violations = safety.check(text, context).violations if text else ()
    by_gate: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    for v in violations:
        gate = _OWN_GATE.get(v.check, "safety")
        by_gate.setdefault(gate, []).append(v.found)
        notes.setdefault(gate, []).append(v.text)
    by_gate.setdefault("placeholder", []).extend(m.group() for m in _LEFTOVER.finditer(text))
    results = [
        GateResult("complete", finished, "the model stopped by itself" if finished else
                   "cut off at the token limit (drafts.generator_max_new_tokens)"),
        _length(text, settings),
        _repetition(text),
        _found("placeholder", by_gate, "leftover placeholder(s)"),
        _found("link", by_gate, "link(s) in neither the email, the knowledge base nor the "
                                "allowed domains"),
        _found("email", by_gate, "e-mail address(es) not in the thread or the configuration"),
        _found("phone", by_gate, "phone number(s) in neither the email, the knowledge base "
                                 "nor route.allowed_contacts"),
        _found("safety", by_gate, "; ".join(notes.get("safety", [])) or "safety checks"),
        _language(text, language, settings.languages),
    ]
    return GateReport(tuple(results))


def _length(text: str, settings: GateSettings) -> GateResult:
    size = len(text)
    if size < settings.min_chars:
        return GateResult("length", False, f"too short: {size} characters "
                          f"(drafts.min_chars = {settings.min_chars})", (str(size),))
    if size > settings.max_chars:
        return GateResult("length", False, f"too long: {size} characters "
                          f"(drafts.max_chars = {settings.max_chars})", (str(size),))
    return GateResult("length", True, f"{size} characters", (str(size),))


def _repetition(text: str) -> GateResult:
    words = [w.casefold() for w in _WORD.findall(text)]
    runs = Counter(tuple(words[i:i + _LOOP_WORDS]) for i in range(len(words) - _LOOP_WORDS + 1))
    run, times = runs.most_common(1)[0] if runs else ((), 0)
    if times >= _LOOP_TIMES:
        quote = " ".join(run)
        return GateResult("repetition", False, f"repeats {quote!r} {times} times", (quote,))
    return GateResult("repetition", True, "no repeated run of words")


def _found(name: str, by_gate: Mapping[str, Sequence[str]], what: str) -> GateResult:
    found = tuple(dict.fromkeys(by_gate.get(name, ())))
    if not found:
        return GateResult(name, True, f"no {name} problem")
    return GateResult(name, False, f"{what}: {', '.join(found[:5])}", found)


def _language(text: str, expected: str, languages: Sequence[str]) -> GateResult:
    if not expected or expected == UNDETERMINED:
        return GateResult("language", True, "the customer's language is unknown; not checked")
    detected = detect_language(text, languages) if text else UNDETERMINED
    if detected == expected:
        return GateResult("language", True, f"written in {expected}", (detected,))
    if detected == UNDETERMINED:
        return GateResult("language", False, f"cannot tell the reply's language (the customer "
                          f"wrote in {expected})", (detected,))
    return GateResult("language", False, f"written in {detected}, the customer wrote in "
                      f"{expected}", (detected,))

