"""The routing rules: each looks at one message and may give a reason to escalate.

Rules are plain functions over what earlier stages produced, so each is tested alone. The
content rules are deliberately simple word patterns in the languages our customers write
in; they err toward escalating, since a needless escalation costs cents and a missed legal
threat costs much more.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from mailbot.config import RouteSettings
from mailbot.parse.message import InboundMessage
from mailbot.route.decision import SKIP, RouteName, RouteReason


@dataclass(frozen=True, slots=True)
class RouteInput:
    """Everything the rules look at for one message."""

    message: InboundMessage
    classification: Any = None  # mailbot.classify.Classification, when the stage ran
    extraction: Any = None  # mailbot.fields.Extraction, when the stage ran
    generated: Any = None  # a generator's reply with `passed` and `gates`, when one ran
    account: str | None = None
    mailbox: str | None = None
    earlier_in_thread: int = 0  # the customer's earlier messages in this thread
    own_addresses: frozenset[str] = frozenset()  # our support addresses (lower case)

    @property
    def text(self) -> str:
        """The subject and what the customer wrote this time."""
        body = self.message.new_text or self.message.text
        return f"{self.message.subject}\n\n{body}"

    @property
    def sender(self) -> str:
        return self.message.from_addr.email.lower() if self.message.from_addr else ""


Rule = Callable[[RouteInput, RouteSettings], Iterable[RouteReason]]

_LEGAL = re.compile(
    r"\b(?:lawyers?|attorneys?|solicitors?|legal (?:action|steps|proceedings)|sue\b|suing"
    r"|lawsuit|take you to court|small claims|court|trading standards|ombudsman"
    r"|anwalt|anwältin|rechtsanwalt|rechtliche schritte|klage|verklagen|gericht|mahnverfahren"
    r"|verbraucherzentrale|abogad[oa]s?|demanda(?:r[ée]?)?|acciones legales|tribunal(?:es)?"
    r"|denuncia|avocats?|poursuites?|mise en demeure)\b",
    re.IGNORECASE,
)
_DATA_PROTECTION = re.compile(
    r"\b(?:gdpr|dsgvo|rgpd|dsar|data protection|subject access request"
    r"|right to (?:be forgotten|erasure|access)"
    r"|(?:delete|erase|remove) (?:all )?(?:of )?my (?:personal )?(?:data|information"
    r"|details|account data)|what (?:personal )?data (?:do )?you (?:hold|have|store)"
    r"|art(?:ikel|icle|\.)?\s*(?:15|17)\b|auskunft nach|datenauskunft|auskunftsersuchen"
    r"|(?:meine|meiner) (?:persönlichen )?daten (?:löschen|gelöscht)|löschung meiner daten"
    r"|datenschutz|(?:borrar|eliminar|suprimir) mis datos|protección de datos"
    r"|supprimer mes données|protection des données)",
    re.IGNORECASE,
)
_CANCEL = re.compile(
    r"\b(?:cancel|cancell?ation|terminate|termination|close my account|end (?:my|our) "
    r"(?:contract|subscription)|kündigen|kündigung|stornieren|stornierung|cancelar|cancelación"
    r"|darme de baja|résilier|résiliation|annuler)\w*",
    re.IGNORECASE,
)
_ANGER_WORDS = re.compile(
    r"\b(?:unacceptable|ridiculous|outrageous|disgrace(?:ful)?|disgusting|furious|fed up|scam"
    r"|worst|appalling|pathetic|shameful|third time|never again|i want my money back"
    r"|unverschämt|frechheit|inakzeptabel|skandal|zum dritten mal|inaceptable|vergüenza"
    r"|indignante|estafa|inadmissible|scandaleux|honteux)\b",
    re.IGNORECASE,
)
_SHOUTED = re.compile(r"\b[A-ZÄÖÜ]{3,}\b")
_QUESTION = re.compile(r"[?¿]+")


def _action(settings: RouteSettings, code: str) -> RouteName | None:
    value = getattr(settings, code)
    return None if value == "off" else value


def _reason(settings: RouteSettings, code: str, text: str, **details: Any) -> list[RouteReason]:
    action = _action(settings, code)
    return [] if action is None else [RouteReason(code, text, action, details)]


def skip_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """Mail from our own support addresses (a loop) or from senders never to be answered."""
    sender = data.sender
    if not sender:
        return []
    if sender in data.own_addresses:
        return [RouteReason("own_address", f"sent from our own address {sender}", SKIP)]
    for pattern in settings.skip_senders:
        if fnmatch.fnmatchcase(sender, pattern.lower()):
            return [RouteReason("skip_sender", f"sender {sender} matches {pattern!r}", SKIP,
                                {"pattern": pattern})]
    return []


def confidence_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """The classifier is unsure of the intent."""
    c = data.classification
    if c is None:
        return []
    # A threshold recalibrated with the head in service (`mailbot learn`) comes with it.
    learned = getattr(c, "min_confidence", None)
    threshold = settings.min_intent_confidence if learned is None else learned
    if c.intent.confidence >= threshold:
        return []
    return _reason(
        settings, "low_confidence",
        f"intent {c.intent.label!r} only {c.intent.confidence:.0%} certain "
        f"(threshold {threshold:.0%})",
        intent=c.intent.label, confidence=round(c.intent.confidence, 4),
        runner_up=c.intent.runner_up, threshold=threshold,
    )


def out_of_scope_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """The message is unlike any intent the small model knows."""
    c = data.classification
    if c is None or not c.out_of_scope:
        return []
    return _reason(settings, "out_of_scope",
                   f"out of scope for the small model (score {c.out_of_scope_score:.2f})",
                   score=round(c.out_of_scope_score, 4))


def generation_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """The generator's draft failed its quality gates."""
    generated = data.generated
    if generated is None or getattr(generated, "passed", True):
        return []
    gates = dict(getattr(generated, "gates", {}) or {})
    return _reason(settings, "generation_failed",
                   "the small model's draft failed its quality gates", gates=gates)


def missing_fields_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """A field the intent needs could not be extracted."""
    missing = list(getattr(data.extraction, "missing", ()) or ())
    if not missing:
        return []
    return _reason(settings, "missing_fields", f"required field(s) missing: {', '.join(missing)}",
                   missing=missing)


def legal_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """A legal threat (lawyer, court, legal action)."""
    found = _LEGAL.search(data.text)
    if not found:
        return []
    return _reason(settings, "legal_threat", f"legal threat ({found.group()!r})",
                   match=found.group())


def data_protection_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """A data-protection request (GDPR access or erasure, "Auskunft nach Art. 15")."""
    found = _DATA_PROTECTION.search(data.text)
    if not found:
        return []
    return _reason(settings, "data_protection", f"data-protection request ({found.group()!r})",
                   match=found.group())


def large_cancellation_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """A cancellation that mentions an amount over the threshold."""
    c = data.classification
    is_cancel = (c is not None and c.intent.label == "cancellation") or bool(
        _CANCEL.search(data.text))
    if not is_cancel:
        return []
    largest = max(amounts(data.extraction), default=None)
    if largest is None or largest < Decimal(str(settings.large_cancellation_amount)):
        return []
    return _reason(settings, "large_cancellation",
                   f"cancellation of a large account ({largest} >= "
                   f"{settings.large_cancellation_amount:g})",
                   amount=str(largest), threshold=settings.large_cancellation_amount)


def angry_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """An angry customer with an urgent matter: negative, high priority and shouting or
    words of anger (a calm bug report with high priority is not angry)."""
    c = data.classification
    if c is None or c.sentiment.label != "negative" or c.priority.label not in ("high", "urgent"):
        return []
    if c.sentiment.confidence < settings.angry_min_confidence:
        return []
    signs = [m.group() for m in _ANGER_WORDS.finditer(data.text)]
    shouted = [w for w in _SHOUTED.findall(data.text) if not any(ch.isdigit() for ch in w)]
    if len(shouted) >= 2:
        signs.append("shouting")
    if "!!" in data.text:
        signs.append("!!")
    signs = list(dict.fromkeys(s.casefold() for s in signs))
    if not signs:
        return []
    return _reason(settings, "angry_high_priority",
                   f"angry customer with {c.priority.label} priority ({', '.join(signs[:3])})",
                   priority=c.priority.label, sentiment_confidence=round(c.sentiment.confidence, 4),
                   signs=signs[:5])


def vip_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """The sender is on the VIP list, or writes from a VIP domain."""
    sender = data.sender
    if not sender:
        return []
    domain = sender.rpartition("@")[2]
    if sender in {s.lower() for s in settings.vip_senders}:
        return _reason(settings, "vip_sender", f"VIP sender {sender}", sender=sender)
    for vip in settings.vip_domains:
        vip = vip.lower().lstrip("@")
        if domain == vip or domain.endswith("." + vip):
            return _reason(settings, "vip_sender", f"sender from VIP domain {vip}", domain=vip)
    return []


def long_email_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """Many questions at once, or a very long text: a template answers one thing."""
    body = data.message.new_text or data.message.text
    questions = len(_QUESTION.findall(body))
    words = len(body.split())
    if questions >= settings.max_questions:
        return _reason(settings, "long_email", f"{questions} questions in one email",
                       questions=questions, words=words)
    if words >= settings.max_words:
        return _reason(settings, "long_email", f"long email ({words} words)",
                       questions=questions, words=words)
    return []


def repeated_contact_rule(data: RouteInput, settings: RouteSettings) -> list[RouteReason]:
    """The customer's third (configurable) message in the same thread."""
    nth = data.earlier_in_thread + 1
    if nth < settings.thread_messages:
        return []
    return _reason(settings, "repeated_contact",
                   f"the customer's message number {nth} in this thread",
                   messages_in_thread=nth)


RULES: tuple[Rule, ...] = (
    skip_rule, confidence_rule, out_of_scope_rule, generation_rule, missing_fields_rule,
    legal_rule, data_protection_rule, large_cancellation_rule, angry_rule, vip_rule,
    long_email_rule, repeated_contact_rule,
)  # fmt: skip


def apply_rules(
    data: RouteInput, settings: RouteSettings, rules: Sequence[Rule] = RULES
) -> list[RouteReason]:
    """Every reason any rule finds, in rule order."""
    return [reason for rule in rules for reason in rule(data, settings)]


def amounts(extraction: Any) -> list[Decimal]:
    """The money amounts an extraction found, as decimals (currency ignored)."""
    if extraction is None:
        return []
    found = []
    for values in extraction.fields.values():
        for value in values:
            if value.type == "money" and isinstance(value.value, tuple):
                try:
                    found.append(Decimal(value.value[0]))
                except InvalidOperation:
                    continue
    return found


_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|wg|fw|fwd|sv|vs|antw|rv|tr|r)\s*(?:\[\d+\])?\s*:\s*|\[[^\]]{1,40}\]\s*)+",
    re.IGNORECASE,
)


def thread_subject(subject: str | None) -> str:
    """The subject without reply/forward prefixes and tags, case-folded ("RE: Fwd: X" -> "x")."""
    return " ".join(_SUBJECT_PREFIX.sub("", subject or "").split()).casefold()
