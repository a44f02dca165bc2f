"""Parse raw email bytes into an `InboundMessage`.

The stdlib parser runs with a compat32-style policy that hands back raw header strings:
`policy.default` builds a header object for every header it touches and costs ~8x more per
message, and we only need a handful of headers, which we decode ourselves (RFC 2047 with
fallbacks, addresses through the strict header registry). Every step is bounded (size, MIME
depth and part count, HTML and text length) so that no input can make parsing hang.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.parser import BytesParser
from email.policy import Compat32
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache

from mailbot.errors import ParseError
from mailbot.parse.autoreply import detect_auto_reply
from mailbot.parse.html import convert_html
from mailbot.parse.message import Address, Attachment, BodySource, InboundMessage
from mailbot.parse.quoting import split_reply

log = logging.getLogger(__name__)

MAX_RAW_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024  # a header section bigger than this is not mail
MAX_MIME_DEPTH = 16
MAX_MIME_PARTS = 250
MAX_HTML_CHARS = 400_000  # handed to the HTML converter
MAX_TEXT_CHARS = 100_000  # kept as `text`; customers do not write novels
MAX_HEADER_CHARS = 2_000  # of a decoded subject or address header
MAX_REFERENCES = 100

# Headers of which at least one must be present for bytes to count as an email.
_MAIL_HEADERS = frozenset(
    {
        "from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
        "in-reply-to", "references", "received", "return-path", "mime-version",
        "content-type", "delivered-to", "x-original-to", "envelope-to",
    }
)  # fmt: skip


class _RawPolicy(Compat32):
    """compat32, but header values come back as the raw strings the parser stored.

    compat32 would wrap a value holding undecodable bytes in a `Header` object; we decode
    those ourselves, with charset fallbacks.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_PARSER = BytesParser(policy=_RawPolicy())
_REGISTRY = HeaderRegistry()

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_HEADER_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MSG_ID = re.compile(r"<([^<>\s]+)>")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_ADDR_SPEC = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$")
_ASCII = bytes(range(128))
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")

# Charsets that mail software writes under names Python does not know, or that are
# supersets in practice (mail labelled latin-1 or ascii is nearly always cp1252).
_CHARSET_ALIASES = {
    "us-ascii": "cp1252", "ascii": "cp1252", "iso-8859-1": "cp1252", "latin-1": "cp1252",
    "latin1": "cp1252", "iso_8859-1": "cp1252", "iso8859-1": "cp1252",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "gb2312": "gb18030", "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8", "x-sjis": "shift_jis", "x-mac-roman": "mac_roman",
    "utf8": "utf-8", "unicode-1-1-utf-7": "utf-7", "windows-874": "cp874",
}  # fmt: skip
# Codecs a sender can name that are not character sets: never decode mail with them.
_REFUSED_CODECS = frozenset(
    {"undefined", "unicode-escape", "raw-unicode-escape", "idna", "punycode"}
)


@dataclass
class _Body:
    """What one walk over the MIME tree collects."""

    plain: list[Message] = field(default_factory=list)
    html: list[Message] = field(default_factory=list)
    named_text: list[Message] = field(default_factory=list)  # inline text parts with a filename
    other_html: list[Message] = field(default_factory=list)  # HTML of unchosen alternatives
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    parts_seen: int = 0
    hidden_chars: int = 0  # of the HTML that became the text


def parse_message(raw: bytes) -> InboundMessage:
    """Parse one email; raise `ParseError` (one line) when the bytes are not an email."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"parse_message() wants bytes, not {type(raw).__name__}")
    raw = bytes(raw)
    if not raw.strip():
        raise ParseError("empty message")
    if len(raw) > MAX_RAW_BYTES:
        raise ParseError(f"message is {len(raw)} bytes, over the {MAX_RAW_BYTES} byte limit")
    header_end = _header_section_end(raw)
    if header_end > MAX_HEADER_BYTES:
        raise ParseError(f"header section is over {MAX_HEADER_BYTES} bytes: not an email")
    try:
        return _parse(raw)
    except ParseError:
        raise
    except RecursionError:
        raise ParseError("MIME structure nested too deeply") from None
    except MemoryError:
        raise ParseError("message too large to parse in memory") from None
    except Exception as exc:  # bounded input, unknown bug: report it as this message's fault
        log.warning("unexpected %s while parsing a message", type(exc).__name__, exc_info=True)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise ParseError(f"cannot parse message: {reason}") from exc


def _looks_like_text(data: bytes) -> bool:
    """Mostly printable: no NUL bytes and few other control characters in the first 4 KiB."""
    sample = data[:4096]
    if not sample or b"\x00" in sample:
        return False
    controls = sum(1 for b in sample if b < 0x20 and b not in (0x09, 0x0A, 0x0C, 0x0D))
    return controls <= len(sample) // 50


def _header_section_end(raw: bytes) -> int:
    """Offset of the blank line ending the headers (or the message length if there is none)."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\r\n\r\n")) if i >= 0]
    return min(ends) if ends else len(raw)


def _parse(raw: bytes) -> InboundMessage:
    # Leading blank lines or a byte-order mark would make the parser read no headers at all.
    content = raw.lstrip(b"\r\n").removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")
    msg = _PARSER.parsebytes(content)
    headers: dict[str, str] = {}  # first value of each header; Message.get scans them all
    for name, value in msg.items():
        headers.setdefault(name.lower(), value)
    defects: list[str] = []
    if headers.keys().isdisjoint(_MAIL_HEADERS):
        # A body that lost its headers (a digest part, a truncated save) is still mail a
        # person may need to read; binary data is not.
        if not _looks_like_text(content):
            raise ParseError("not an email: no header section, and the content is not text")
        msg = _PARSER.parsebytes(b"\n" + content)
        headers = {}
        defects.append("no-header-section")
    defects.extend(_defect_name(d) for d in msg.defects)

    subject = _decoded_header(headers, "subject", defects)
    from_list = _addresses(headers, "from", defects, strict=True)
    from_addr = from_list[0] if from_list else None
    if "from" in headers and from_addr is None:
        defects.append("unparsable-from")
    message_ids = _msg_ids(headers.get("message-id"))
    references = _msg_ids(headers.get("references"))
    if len(references) > MAX_REFERENCES:  # keep the thread root and the nearest parents
        references = references[:1] + references[-(MAX_REFERENCES - 1) :]
    reply_ids = _msg_ids(headers.get("in-reply-to"))

    body = _Body()
    _walk(msg, 0, body, body_wanted=True)
    defects.extend(body.defects)
    text, body_source = _body_text(body, defects)
    new_text, quoted, signature = split_reply(text)

    return InboundMessage(
        sha256=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=reply_ids[0] if reply_ids else None,
        references=tuple(dict.fromkeys(references)),
        subject=subject,
        from_addr=from_addr,
        reply_to=_addresses(headers, "reply-to", defects, strict=True),
        to=_addresses(headers, "to", defects, strict=False),
        cc=_addresses(headers, "cc", defects, strict=False),
        date=_date(headers, defects),
        text=text,
        new_text=new_text,
        quoted=quoted,
        signature=signature,
        body_source=body_source,
        attachments=tuple(body.attachments),
        auto_reply=detect_auto_reply(msg, from_addr, subject),
        list_id=_list_id(headers, defects),
        defects=tuple(dict.fromkeys(defects)),
        language_hint=_language(headers),
        hidden_chars=body.hidden_chars,
    )


# --- headers -------------------------------------------------------------------------------


def _defect_name(defect: object) -> str:
    """`MissingHeaderBodySeparatorDefect` -> `missing-header-body-separator`."""
    name = type(defect).__name__.removesuffix("Defect")
    return _CAMEL.sub("-", name).lower()


def _unsurrogate(value: str) -> str:
    """Turn undecodable header bytes (kept as surrogates by the parser) into text."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        data = value.encode("utf-8", "surrogateescape")
        return _decode_bytes(data, None)[0]


def _raw_header(headers: dict[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    value = _unsurrogate(_FOLD.sub("", str(value)))
    return _HEADER_CONTROL.sub(" ", value).strip()


def _decoded_header(headers: dict[str, str], name: str, defects: list[str]) -> str:
    """A header as text: RFC 2047 words decoded, broken ones kept as written."""
    value = _raw_header(headers, name)
    if not value:
        return ""
    value = value[: MAX_HEADER_CHARS * 4]
    return _decode_words(value, name, defects)[:MAX_HEADER_CHARS]


def _decode_words(value: str, name: str, defects: list[str]) -> str:
    if "=?" not in value:
        return value
    try:
        parts = decode_header(value)
    except (HeaderParseError, ValueError, LookupError):
        defects.append(f"bad-encoded-word-in-{name}")
        return value
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:
            # decode_header hands back the plain runs encoded as raw-unicode-escape
            out.append(chunk.decode("raw-unicode-escape", "replace"))
        else:
            text, problem = _decode_bytes(chunk, charset)
            if problem:
                defects.append(f"{problem}-in-{name}")
            out.append(text)
    return _HEADER_CONTROL.sub(" ", "".join(out)).strip()


def _addresses(
    headers: dict[str, str], name: str, defects: list[str], *, strict: bool
) -> tuple[Address, ...]:
    """Mailboxes of an address header.

    With `strict`, a header that needs guessing yields nothing (plus a defect), so that a
    crafted From or Reply-To can never route a reply to an address it only appears to hold.
    """
    value = _raw_header(headers, name)
    if not value:
        return ()
    value = value[: MAX_HEADER_CHARS * 4]
    pairs = _simple_addresses(value)
    if pairs is None:
        pairs, invalid = _registry_addresses(name, value)
        if invalid:
            defects.append(f"invalid-{name}")
            if strict:
                return ()
    found = []
    for display, email in pairs:
        display = _decode_words(display, name, defects) if display else ""
        local, _, domain = email.rpartition("@")
        found.append(Address(display, f"{local}@{domain.lower()}"))
    return tuple(found)


def _simple_addresses(value: str) -> list[tuple[str, str]] | None:
    """The common, unambiguous header forms through the fast `getaddresses`, else None.

    The checks are those of `getaddresses(strict=True)` in newer Pythons (balanced
    parentheses, one address per comma, no domain literals) plus a plain addr-spec shape;
    anything else goes to the slower, exact header registry.
    """
    if "(" in value or ")" in value or "[" in value or "\\" in value or ";" in value:
        return None
    pairs = getaddresses([value])
    expected = 1 + _QUOTED.sub("", value).count(",")
    if len(pairs) != expected:
        return None
    for _display, email in pairs:
        if not _ADDR_SPEC.match(email):
            return None
    return pairs


def _registry_addresses(name: str, value: str) -> tuple[list[tuple[str, str]], bool]:
    """Addresses via the stdlib's RFC 5322 header registry, and whether it had to guess."""
    try:
        header = _REGISTRY(name, value)
        mailboxes = header.addresses  # type: ignore[attr-defined]  # an AddressHeader
        invalid = any(type(d).__name__ == "InvalidHeaderDefect" for d in header.defects)
    except Exception:  # the registry raises IndexError and friends on some garbage
        return [], True
    pairs = [
        (_HEADER_CONTROL.sub(" ", m.display_name or "").strip(), f"{m.username}@{m.domain}")
        for m in mailboxes
        if m.username and m.domain
    ]
    return pairs, invalid


def _msg_ids(value: str | None) -> list[str]:
    """Message-IDs in a Message-ID / In-Reply-To / References header, without brackets."""
    if not value:
        return []
    value = _unsurrogate(str(value))
    ids = _MSG_ID.findall(value)
    if not ids:  # some mailers leave out the brackets
        ids = [token.strip("<>,") for token in value.split()]
    return [i[:998] for i in ids if i]


def _date(headers: dict[str, str], defects: list[str]) -> datetime | None:
    value = _raw_header(headers, "date")
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (ValueError, TypeError, OverflowError, IndexError):
        defects.append("bad-date")
        return None
    if parsed.tzinfo is None:  # "-0000": zone unknown, the time is UTC (RFC 5322 3.3)
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        defects.append("bad-date")
        return None


def _list_id(headers: dict[str, str], defects: list[str]) -> str | None:
    value = _decoded_header(headers, "list-id", defects)
    if not value:
        return None
    inner = _MSG_ID.search(value)
    return inner.group(1) if inner else value


def _language(headers: dict[str, str]) -> str | None:
    value = _raw_header(headers, "content-language")
    if not value:
        return None
    first = value.split(",", 1)[0].strip().lower()
    return first[:35] or None


# --- MIME tree -----------------------------------------------------------------------------


def _walk(part: Message, depth: int, body: _Body, *, body_wanted: bool) -> None:
    """Collect body candidates and attachments, depth-first and bounded.

    `body_wanted` is false below a losing multipart/alternative branch: its text repeats
    the chosen one (its HTML is kept aside in case the chosen plain text is empty), but
    files there (inline images of the HTML version) are still listed.
    """
    body.parts_seen += 1
    if body.parts_seen > MAX_MIME_PARTS:
        if body.parts_seen == MAX_MIME_PARTS + 1:
            body.defects.append("too-many-mime-parts")
        return
    if depth:
        body.defects.extend(_defect_name(d) for d in part.defects)
    content_type = part.get_content_type()
    if content_type.startswith("multipart/"):
        if not part.is_multipart():  # no usable boundary: the body is one raw text
            if body_wanted:
                body.plain.append(part)
            return
        if depth >= MAX_MIME_DEPTH:
            body.defects.append("mime-too-deep")
            return
        children = [p for p in part.get_payload() if isinstance(p, Message)]
        chosen = _pick_alternative(children) if content_type == "multipart/alternative" else None
        for child in children:
            wanted = body_wanted and (chosen is None or child is chosen)
            _walk(child, depth + 1, body, body_wanted=wanted)
        return
    disposition = part.get_content_disposition()
    filename = _filename(part, body.defects)
    if content_type in ("text/plain", "text/html") and disposition != "attachment":
        if not filename:
            if body_wanted:
                (body.plain if content_type == "text/plain" else body.html).append(part)
            elif content_type == "text/html":
                body.other_html.append(part)
            return
        if body_wanted and content_type == "text/plain":
            body.named_text.append(part)  # listed as a file, and read if nothing else is
    data = _part_bytes(part)
    body.attachments.append(
        Attachment(filename, content_type, len(data), hashlib.sha256(data).hexdigest())
    )


def _pick_alternative(children: list[Message]) -> Message | None:
    """The alternative to read: plain text if there is one, else the richest (last) one."""
    for child in children:
        if child.get_content_type() == "text/plain" and child.get_content_disposition() != (
            "attachment"
        ):
            return child
    return children[-1] if children else None


def _filename(part: Message, defects: list[str]) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # malformed RFC 2231 parameters
        defects.append("bad-filename")
        return None
    if not name:
        return None
    return _decode_words(_unsurrogate(str(name)), "filename", defects)[:255] or None


def _part_bytes(part: Message) -> bytes:
    """The decoded content of a leaf part (an attached message: its bytes as written)."""
    # get_payload() without decode=True would decode 8-bit text by its charset parameter,
    # which raises on a garbled one; is_multipart() only asks whether parts are inside.
    if part.is_multipart():  # message/rfc822, message/delivery-status
        chunks = []
        for sub in part.get_payload():
            try:
                chunks.append(sub.as_bytes() if isinstance(sub, Message) else b"")
            except Exception:  # re-serialising a broken attached message; size it as empty
                chunks.append(b"")
        return b"\n".join(chunks)
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


# --- body text -----------------------------------------------------------------------------


def _decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode text in the declared charset, falling back to UTF-8, then cp1252/latin-1.

    Returns the text and a short defect name when a fallback was needed, else None.
    """
    if data.isascii():
        return data.decode("ascii"), None
    codec = _codec(charset) if charset else None
    problem = "unknown-charset" if charset and codec is None else None
    if codec == "cp1252":
        # Declared ASCII or Latin-1 is often really UTF-8, and cp1252 would decode that into
        # mojibake without complaint; text that is valid UTF-8 almost never is anything else.
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
    if codec:
        try:
            return data.decode(codec), None
        except (UnicodeError, LookupError, ValueError):
            problem = "charset-mismatch"
    if codec not in ("utf-8", "cp1252"):
        try:
            return data.decode("utf-8"), problem
        except UnicodeDecodeError:
            pass
    if codec and codec != "cp1252":  # a real charset with a few bad bytes: keep it
        try:
            text = data.decode(codec, "replace")
        except (UnicodeError, LookupError, ValueError):
            text = None
        # "UTF-8" over cp1252 text is a common mislabel: then nearly every non-ASCII byte
        # is invalid, whereas real UTF-8 with a stray byte has a few.
        if text is not None and not (
            codec == "utf-8" and 2 * text.count("\ufffd") > len(data.translate(None, _ASCII))
        ):
            return text, problem
    try:
        return data.decode("cp1252"), problem
    except UnicodeDecodeError:
        return data.decode("latin-1"), problem


@lru_cache(maxsize=256)
def _codec(charset: str) -> str | None:
    """The Python codec for a MIME charset name, or None when there is none."""
    name = charset.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if info.name in _REFUSED_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _part_text(part: Message, defects: list[str]) -> str:
    data = _part_bytes(part)
    try:
        charset = part.get_content_charset()
    except Exception:  # a charset parameter the stdlib chokes on (RFC 2231 junk)
        charset = None
    text, problem = _decode_bytes(data, charset)
    if problem:
        defects.append(problem)
    return text


def _body_text(body: _Body, defects: list[str]) -> tuple[str, BodySource]:
    source: BodySource = "none"
    text = ""
    plain = body.plain or (body.named_text if not body.html else [])
    if plain:
        text = "\n\n".join(_part_text(p, defects) for p in plain)
        source = "plain"
    html = body.html or body.other_html
    if not text.strip() and html:
        # An empty text/plain alternative beside real HTML is common; read the HTML then.
        html_text = _html_body(html, defects, body)
        if html_text.strip() or source == "none":
            text, source = html_text, "html"
    text = _clean_text(text)
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS]
        defects.append("text-truncated")
    return text, source


def _html_body(parts: list[Message], defects: list[str], body: _Body) -> str:
    pieces = []
    budget = MAX_HTML_CHARS
    for part in parts:
        html = _part_text(part, defects)
        if len(html) > budget:
            html = html[:budget]
            defects.append("html-truncated")
        budget -= len(html)
        converted = convert_html(html)
        if converted.problem:
            defects.append(converted.problem)
        if converted.hidden_chars:
            body.hidden_chars += converted.hidden_chars
            defects.append("hidden-text")
        pieces.append(converted.text)
        if budget <= 0:
            break
    return "\n\n".join(pieces)


def _clean_text(text: str) -> str:
    """Unix newlines, no control characters (PostgreSQL refuses NUL), few blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "\n")
    text = _CONTROL.sub("", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
