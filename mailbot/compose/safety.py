"""Safety checks on every reply body before it becomes a draft, whoever wrote it.

A model that read a hostile email may do what the email asked: write to another address,
add a link that leaks data, promise a refund, or repeat its instructions. These checks run
in code on the finished body (templates are trusted but checked the same way) and fail
closed: a failed check sends the message to a person with the reason.

Everything in a customer's email is written by its sender, headers included: From's display
name, Subject, Reply-To, Cc and attachment file names as much as the body. What a reply may
mention:
- e-mail addresses: our own addresses, `route.allowed_contacts`, addresses in the
  knowledge-base passages used, and the customer's own From address. Reply-To, To and Cc
  never vouch for an address in the body: an attacker puts the address they want a reply
  to recommend there. A reply goes to Reply-To (as mail clients do) or From, never to Cc;
- links: only to `route.allowed_domains`, our own domain, or as written in the passages.
  A link from the customer's email is not vouched for: in a reply from our address it
  carries our name, and a planted phishing page reads just like a customer's own link;
- phone numbers in the passages or `allowed_contacts`, and the customer's own numbers,
  but never presented as ours ("call our hotline on ...");
- file names from the customer's email or attachments, never a program file (.exe, .scr,
  .js, ...), and no claim of an attachment (drafts carry none);
- amounts among those extracted from the email or written in the passages, and no amount
  above `route.max_promised_amount` that the reply commits us to, in any wording (see
  `mailbot.compose.promises`: anything but a report of the customer's own words counts);
- no markdown images or HTML (a plain-text reply needs neither; images fetch URLs), no
  placeholder left over from pseudonymisation, and no run of `prompt_overlap_words` words
  from a prompt template.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailbot.compose.promises import promised_amounts
from mailbot.config import RouteSettings
from mailbot.fields.money import find_money
from mailbot.fields.patterns import find_emails, find_urls
from mailbot.fields.phones import find_phones
from mailbot.parse.message import InboundMessage
from mailbot.privacy.pseudonymise import PLACEHOLDER

log = logging.getLogger(__name__)

_MARKDOWN_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")
_MARKDOWN_LINK = re.compile(r"(?<!!)\[[^\]\n]+\]\(\s*(?:https?:|www\.|mailto:)[^)\n]*\)", re.I)
_HTML_TAG = re.compile(
    r"<\s*/?\s*(?:img|a|script|iframe|style|form|input|link|meta|object|embed|svg)\b", re.I
)
_FILENAME = re.compile(
    r"(?<![\w/.-])[\w][\w .()-]{0,80}?(?:\.(?:pdf|docx?|xlsx?|pptx?|odt|ods|zip|rar|7z|tar|gz|exe"
    r"|msi|bat|cmd|scr|pif|vbs|vbe|jse?|wsf|ps1|jar|apk|dmg|pkg|iso|lnk|hta|html?|png|jpe?g"
    r"|gif|csv|txt|ics|eml|vcf)\b)+",  # all of "invoice.pdf.exe"
    re.IGNORECASE,
)
# The cheap first look for a file name: its extension (the full pattern backtracks a lot).
_EXTENSION = re.compile(
    r"\.(?:pdf|docx?|xlsx?|pptx?|odt|ods|zip|rar|7z|tar|gz|exe|msi|bat|cmd|scr|pif|vbs|vbe"
    r"|jse?|wsf|ps1|jar|apk|dmg|pkg|iso|lnk|hta|html?|png|jpe?g|gif|csv|txt|ics|eml|vcf)\b",
    re.IGNORECASE,
)
_EXECUTABLE = re.compile(
    r"\.(?:exe|msi|bat|cmd|scr|pif|vbs|vbe|js|jse|wsf|ps1|jar|apk|dmg|pkg|iso|lnk|hta)$",
    re.IGNORECASE,
)
_ATTACH_CLAIM = re.compile(
    r"\b(?:(?:we|i)(?:'ve| have)? attached|(?:please )?find attached|see (?:the )?attached"
    r"|attached (?:is|you will find|please find|to this (?:e-?mail|message))"
    r"|in the attachment|(?:im|siehe) anhang|anbei (?:finden|erhalten|senden)"
    r"|adjunto (?:le|te|encontrar)"
    r"|encontrará adjunto|ci-joint|en pièce jointe)\b",
    re.IGNORECASE,
)
# Words that present a phone number as the company's own, in the supported languages.
_OURS = re.compile(
    r"\b(?:our|us|hotline|helpline|unser\w*|uns|notre|nos|contactez-nous|appelez-nous"
    r"|nuestr[oa]s?|ll[aá]menos|cont[aá]ctenos|nostr[oia]|chiamateci|contattateci|onze|ons"
    r"|noss[oa]s?|ligue-nos|contacte-nos|servicenummer|servicenumber|service line)\b",
    re.IGNORECASE,
)
# A sentence ends at . ! ? before a space or the end; "5000.00" is not an end.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
_WORD = re.compile(r"\w+", re.UNICODE)
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Violation:
    """One failed check: which, what was found, and a sentence for the agent."""

    check: str  # "recipient", "email", "link", "phone", "attachment", "amount", "promise",
    # "markup", "placeholder" or "prompt_leak"
    found: str
    text: str

    def to_json(self) -> dict[str, str]:
        """`{"check", "found", "text"}`."""
        return {"check": self.check, "found": self.found, "text": self.text}


@dataclass(frozen=True, slots=True)
class SafetyReport:
    """The outcome of all checks on one reply body."""

    violations: tuple[Violation, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        """The violations as one line for the agent."""
        return "; ".join(v.text for v in self.violations)

    def to_json(self) -> dict[str, Any]:
        """`{"passed", "violations": [...]}`."""
        return {"passed": self.passed, "violations": [v.to_json() for v in self.violations]}


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """What a reply to one message may draw on."""

    message: InboundMessage
    extraction: Any = None
    passages: Sequence[str] = ()
    own_addresses: Sequence[str] = ()
    recipients: Sequence[str] = ()  # the draft's To and Cc addresses
    language: str | None = None

    @property
    def customer_text(self) -> str:
        return f"{self.message.subject}\n{self.message.text}"

    def thread_addresses(self) -> set[str]:
        """Every address in the email's From, Reply-To, To and Cc headers (lower case).

        For display only: the sender writes all of these headers, so none of them is a
        reason to let an address into a reply (see `reply_recipients`, `body_addresses`).
        """
        m = self.message
        found = [*m.reply_to, *m.to, *m.cc, *([m.from_addr] if m.from_addr else [])]
        return {a.email.lower() for a in found}

    def reply_recipients(self) -> set[str]:
        """Where a reply to this email may go: its From and Reply-To addresses (lower case).

        Replying to Reply-To is what every mail client does; Cc and To addresses are other
        people the sender chose to name and never become recipients of a draft."""
        m = self.message
        found = [*m.reply_to, *([m.from_addr] if m.from_addr else [])]
        return {a.email.lower() for a in found}

    def body_addresses(self) -> set[str]:
        """The thread's addresses a reply body may mention: the customer's own From address
        and our own addresses. Reply-To, To and Cc are left out: an attacker sets Reply-To or
        Cc to the address they want a reply to recommend ("write to billing@evil.example")."""
        own = {a.lower() for a in self.own_addresses}
        sender = self.message.from_addr
        return own | ({sender.email.lower()} if sender else set())


class SafetyChecker:
    """Checks reply bodies; built once from the config and the prompt templates."""

    def __init__(
        self,
        settings: RouteSettings,
        *,
        prompt_texts: Iterable[str] = (),
        phone_regions: Sequence[str] = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "AT", "CH"),
    ) -> None:
        self.settings = settings
        self.phone_regions = tuple(phone_regions)
        self.allowed_domains = {d.lower().lstrip("@.") for d in settings.allowed_domains}
        contacts = "\n".join(settings.allowed_contacts)
        self.allowed_emails = {c.value for c in find_emails(contacts)}
        self.allowed_phones = _phones(contacts, self.phone_regions, None)
        self.max_promised = Decimal(str(settings.max_promised_amount))
        self.n = settings.prompt_overlap_words
        self.prompt_ngrams: set[tuple[str, ...]] = set()
        for text in prompt_texts:
            for segment in _JINJA.split(text):  # a run of words never spans a template tag
                self.prompt_ngrams.update(_ngrams(segment, self.n))

    @classmethod
    def from_config(cls, config: Any) -> SafetyChecker:
        """A checker with the config's route settings and the prompt templates in use."""
        from mailbot.llm.prompts import default_prompts_dir

        directory = (config.base_dir / config.llm.prompts_dir if config.llm.prompts_dir
                     else default_prompts_dir())
        texts = [p.read_text(encoding="utf-8") for p in sorted(Path(directory).glob("*.j2"))]
        return cls(config.route, prompt_texts=texts, phone_regions=config.fields.phone_regions)

    def check(self, body: str, context: ReplyContext) -> SafetyReport:
        """Run every check on `body`; the report lists each violation found."""
        violations: list[Violation] = []
        for check in (self._recipients, self._markup, self._placeholders, self._emails,
                      self._links, self._phones, self._attachments, self._amounts,
                      self._prompt_leak):
            violations.extend(check(body, context))
        if violations:
            log.info("reply held back by %d safety check(s): %s", len(violations),
                     ", ".join(sorted({v.check for v in violations})))
        return SafetyReport(tuple(violations))

    # --- the checks ------------------------------------------------------------------------

    def _recipients(self, body: str, context: ReplyContext) -> list[Violation]:
        allowed = context.reply_recipients()
        return [Violation("recipient", r, f"recipient {r} is neither the sender nor the "
                                          "email's Reply-To address")
                for r in context.recipients if r.lower() not in allowed]

    def _markup(self, body: str, context: ReplyContext) -> list[Violation]:
        found = [*(m.group() for m in _MARKDOWN_IMAGE.finditer(body)),
                 *(m.group() for m in _MARKDOWN_LINK.finditer(body)),
                 *(m.group() for m in _HTML_TAG.finditer(body))]
        return [Violation("markup", f[:120], f"markup that can load or hide a link: {f[:80]!r}")
                for f in found]

    def _placeholders(self, body: str, context: ReplyContext) -> list[Violation]:
        return [Violation("placeholder", m.group(), f"placeholder {m.group()} left in the reply")
                for m in PLACEHOLDER.finditer(body)]

    def _emails(self, body: str, context: ReplyContext) -> list[Violation]:
        allowed = context.body_addresses() | {str(a).lower() for a in self.allowed_emails}
        for passage in context.passages:
            allowed |= {str(c.value).lower() for c in find_emails(passage)}
        out = []
        for c in find_emails(body):
            address = str(c.value)
            if address.lower() not in allowed:
                out.append(Violation("email", address,
                                     f"e-mail address {address} is neither the sender's, ours, "
                                     "route.allowed_contacts nor in the knowledge base"))
        return out

    def _links(self, body: str, context: ReplyContext) -> list[Violation]:
        # The customer's own text never vouches for a link: a reply from our address lends
        # the link our name, and the email may come from someone other than the recipient.
        sources = list(context.passages)
        own = {a.rpartition("@")[2].lower() for a in context.own_addresses if "@" in a}
        out = []
        for c in find_urls(body):
            url = str(c.value)
            if any(url in source for source in sources):
                continue
            host = _host(url)
            if host and any(host == d or host.endswith("." + d)
                            for d in self.allowed_domains | own):
                continue
            out.append(Violation("link", url, f"link {url} is in neither the knowledge base "
                                              "nor route.allowed_domains"))
        return out

    def _phones(self, body: str, context: ReplyContext) -> list[Violation]:
        found = [c for c in find_phones(body, self.phone_regions, context.language)
                 if c.problem is None]
        if not found:
            return []
        trusted = set(self.allowed_phones)
        for text in context.passages:
            trusted |= _phones(text, self.phone_regions, context.language)
        customers = _phones(context.customer_text, self.phone_regions, context.language)
        out = []
        for c in found:
            number = str(c.value)
            if number in trusted:
                continue
            if number not in customers:
                out.append(Violation("phone", number, f"phone number {number} is in neither the "
                                     "email, the knowledge base nor route.allowed_contacts"))
            elif _OURS.search(_sentence_around(body, c.start)):
                # The customer's own number may be repeated ("we will call you on ..."), but
                # never as ours: "our new hotline is ..." is the premium-rate trick.
                out.append(Violation("phone", number, f"phone number {number} from the "
                                     "customer's email is given as ours"))
        return out

    def _attachments(self, body: str, context: ReplyContext) -> list[Violation]:
        out = [Violation("attachment", m.group(), f"the reply claims an attachment "
                                                  f"({m.group()!r}); drafts carry none")
               for m in _ATTACH_CLAIM.finditer(body)]
        url_spans = [(c.start, c.end) for c in find_urls(body)]
        known = {(a.filename or "").lower() for a in context.message.attachments}
        source = context.customer_text.lower() + "\n" + "\n".join(context.passages).lower()
        for m in _FILENAME.finditer(body) if _EXTENSION.search(body) else ():
            if any(s <= m.start() < e for s, e in url_spans):
                continue
            name = m.group().strip()
            # The pattern allows spaces in names, so it may have taken the words before
            # the name too ("please open x.pdf"): any tail from a word start may be the name.
            tails = [name[i:].lower() for i in range(len(name)) if i == 0 or name[i - 1] == " "]
            if _EXECUTABLE.search(name):
                # Whoever named it, a support reply never asks anyone to open a program.
                out.append(Violation("attachment", name,
                                     f"the reply names a program file ({name!r})"))
                continue
            if any(t in known or t in source for t in tails):
                continue
            out.append(Violation("attachment", name,
                                 f"file name {name!r} is not in the customer's email"))
        return out

    def _amounts(self, body: str, context: ReplyContext) -> list[Violation]:
        allowed = set(_extracted_amounts(context.extraction))
        for passage in context.passages:
            allowed |= {a for a, _ in _money(passage)}
        out = []
        for amount, raw in _money(body):
            if amount not in allowed:
                out.append(Violation("amount", raw, f"amount {raw} is neither in the email's "
                                                    "extracted fields nor the knowledge base"))
        identifiers = frozenset(_identifiers(context.extraction))
        for promise in promised_amounts(body, self.max_promised, tuple(context.passages),
                                        identifiers):
            if promise.amount is None:
                out.append(Violation(
                    "promise", promise.raw, f"commits to an amount written in words "
                                            f"({promise.sentence[:80]!r}); a person checks it"))
                continue
            out.append(Violation(
                "promise", promise.raw, f"commits to {promise.raw}, more than a draft may "
                                        f"promise (route.max_promised_amount = "
                                        f"{self.max_promised})"))
        return out

    def _prompt_leak(self, body: str, context: ReplyContext) -> list[Violation]:
        if not self.prompt_ngrams:
            return []
        shared = [g for g in _ngrams(body, self.n) if g in self.prompt_ngrams]
        if not shared:
            return []
        quote = " ".join(shared[0])
        return [Violation("prompt_leak", quote,
                          f"the reply repeats the prompt's instructions ({quote!r})")]


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = [w.casefold() for w in _WORD.findall(text)]
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _host(url: str) -> str:
    try:
        return (urlsplit(url if "://" in url else "http://" + url).hostname or "").lower()
    except ValueError:
        return ""


def _phones(text: str, regions: Sequence[str], language: str | None) -> set[str]:
    return {str(c.value) for c in find_phones(text, tuple(regions), language)
            if c.problem is None}


def _money(text: str) -> list[tuple[Decimal, str]]:
    out = []
    for c in find_money(text):
        if c.problem is not None or not isinstance(c.value, tuple):
            continue
        try:
            out.append((Decimal(c.value[0]), text[c.start:c.end]))
        except InvalidOperation:
            continue
    return out


def _identifiers(extraction: Any) -> list[str]:
    """The extracted values that are not money (order numbers, ...), as written."""
    if extraction is None:
        return []
    return [v.raw for values in extraction.fields.values() for v in values
            if v.type != "money"]


def _extracted_amounts(extraction: Any) -> list[Decimal]:
    from mailbot.route.rules import amounts

    return amounts(extraction)


def _sentence_around(text: str, position: int) -> str:
    """The sentence of `text` that holds `position`."""
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() >= position:
            return text[start:m.start()]
        start = m.end()
    return text[start:]
