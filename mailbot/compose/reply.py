"""The draft stage's core: choose the template, fill it, and build the threaded reply."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailbot.classify.language import REPLY_LANGUAGES, UNDETERMINED, detect_language
from mailbot.compose.mime import build_reply, new_message_id, reply_subject
from mailbot.compose.templates import ReplyTemplates
from mailbot.parse.message import Address, InboundMessage

TEMPLATE_MODEL = "template"


@dataclass(frozen=True, slots=True)
class Draft:
    """A drafted reply, ready to be recorded and delivered."""

    token: str
    message_id: str
    template: str
    template_version: str
    language: str
    subject: str
    body: str
    sender: Address
    to: Address
    mime: bytes
    fields: Mapping[str, Any]
    missing: tuple[str, ...]
    passages: tuple[Mapping[str, Any], ...]
    needs_review: bool
    review_reasons: tuple[str, ...]
    gates: Mapping[str, Any] = field(default_factory=dict)
    model: str = TEMPLATE_MODEL

    def summary(self) -> dict[str, Any]:
        """What the audit event keeps about the draft (the body is in the drafts table)."""
        return {
            "template": self.template,
            "template_version": self.template_version,
            "language": self.language,
            "token": self.token,
            "reply_message_id": self.message_id,
            "fields": dict(self.fields),
            "missing": list(self.missing),
            "passages": [dict(p) for p in self.passages],
            "needs_review": self.needs_review,
            "review_reasons": list(self.review_reasons),
            "gates": dict(self.gates),
        }


@dataclass(frozen=True, slots=True)
class NoDraft:
    """Why no draft was written (the message then waits for a person)."""

    reason: str


@dataclass(frozen=True, slots=True)
class DraftOptions:
    """What the drafts section of the config says, resolved once."""

    company: str
    signature: str
    from_name: str
    signatures: Mapping[str, str] = field(default_factory=dict)
    min_passage_score: float = 0.0
    html_alternative: bool = False

    def signature_for(self, language: str) -> str:
        """The sign-off of a reply in `language`: drafts.signatures, else the shipped one for
        that language, else drafts.signature (English and any other language)."""
        configured = self.signatures.get(language)
        if configured:
            return configured
        if language != "en" and language in DEFAULT_SIGNATURES:
            return DEFAULT_SIGNATURES[language]
        return self.signature


# Sign-offs of replies in the shipped languages when drafts.signatures has none for them:
# a Spanish reply never ends in "Kind regards".
DEFAULT_SIGNATURES = {
    "de": "Mit freundlichen Grüßen\nIhr Kundenservice",
    "fr": "Cordialement,\nLe service client",
    "es": "Un saludo,\nAtención al cliente",
    "it": "Cordiali saluti,\nIl servizio clienti",
    "nl": "Met vriendelijke groet,\nDe klantenservice",
    "pt": "Com os melhores cumprimentos,\nO apoio ao cliente",
}


def first_name(address: Address | None) -> str | None:
    """A greeting name from the From header ("Emma Clarke" or "Clarke, Emma" -> "Emma")."""
    if address is None or not address.name.strip():
        return None
    name = address.name.strip().strip('"')
    if "," in name:
        name = name.split(",", 1)[1]
    token = name.split()[0] if name.split() else ""
    if not re.fullmatch(r"[^\W\d_][^\W\d_'.-]*", token) or token.isupper() and len(token) > 3:
        return None
    return token


def field_values(extraction: Any) -> dict[str, Any]:
    """The first value of each extracted field, as templates and the audit log see it."""
    if extraction is None:
        return {}
    values: dict[str, Any] = {}
    for name, found in extraction.fields.items():
        if found:
            values[name] = _display(found[0].json_value())
    return values


def _passage_language(passage: Any) -> str:
    text = str(getattr(passage, "text", ""))
    language = detect_language(text, REPLY_LANGUAGES)
    return "en" if language == UNDETERMINED else language


def _heading(path: Any) -> str | None:
    if not path:
        return None
    return path if isinstance(path, str) else " > ".join(path)


def _display(value: Any) -> Any:
    if isinstance(value, dict) and "amount" in value:
        currency = value.get("currency")
        return f"{value['amount']} {currency}" if currency else str(value["amount"])
    return value


def compose_draft(
    message: InboundMessage,
    intent: str,
    language: str,
    sender: Address,
    templates: ReplyTemplates,
    options: DraftOptions,
    *,
    extraction: Any = None,
    passages: Sequence[Any] = (),
    written_body: str | None = None,
    model: str = TEMPLATE_MODEL,
    gates: Mapping[str, Any] | None = None,
) -> Draft | NoDraft:
    """Fill the intent's template for this message; NoDraft says why there is none.

    With `written_body` (a reply body a model wrote), the shared layout (greeting,
    signature) wraps that body instead of the intent's template. `gates` are the generator's
    quality-gate results, kept on the draft.
    """
    recipient = message.reply_address
    if recipient is None:
        return NoDraft("no valid sender or Reply-To address to answer")
    found = (templates.find("written", language) if written_body is not None
             else templates.find(intent, language))
    if found is None:
        return NoDraft(f"no reply template for intent {intent!r}")
    name, template_language = found
    reasons: list[str] = []
    if template_language != language:
        reasons.append(f"no {language!r} template for {intent!r}: drafted in {template_language}")
    fields = field_values(extraction)
    missing = tuple(extraction.missing) if extraction is not None else ()
    grounded = [p for p in passages if getattr(p, "score", 0.0) >= options.min_passage_score]
    context = {
        "customer_name": first_name(message.from_addr),
        "fields": fields,
        "missing": list(missing),
        # Only a passage in the reply's language is quoted in it.
        "passages": [p for p in grounded if _passage_language(p) == template_language],
        "company": options.company,
        "signature": options.signature_for(template_language),
        "subject": message.subject,
        "written_body": written_body,
    }
    body = templates.render(name, context)
    token = uuid.uuid4().hex
    message_id = new_message_id(sender.email)
    subject = reply_subject(message.subject)
    mime = build_reply(
        sender=sender, to=recipient, subject=subject, body=body, message_id=message_id,
        in_reply_to=message.message_id, references=message.references, token=token,
        language=template_language, html_alternative=options.html_alternative,
    )
    return Draft(
        token=token, message_id=message_id, template=f"replies/{name}",
        template_version=templates.version(name), language=template_language,
        subject=subject, body=body, sender=sender, to=recipient, mime=mime, fields=fields,
        missing=missing,
        passages=tuple(
            {"id": getattr(p, "id", None), "source": getattr(p, "source", None),
             "heading": _heading(getattr(p, "heading_path", None)),
             "score": round(float(getattr(p, "score", 0.0)), 4)}
            for p in grounded
        ),
        needs_review=bool(reasons), review_reasons=tuple(reasons), model=model,
        gates=dict(gates or {}),
    )
