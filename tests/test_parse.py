"""Parsing raw email into InboundMessage: headers, bodies, HTML, quotes, limits, robustness."""

from __future__ import annotations

import base64
import dataclasses
import email
import hashlib
import random
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest

from mailbot.errors import ParseError
from mailbot.parse.message import InboundMessage
from mailbot.parse.mime import parse_message

CPYTHON = Path(__file__).resolve().parents[2] / "shared/data/emails/cpython"
SAMPLES = Path(__file__).resolve().parents[1] / "mailbot/data/samples"


def mail(body: str | bytes = "Hello,\n\nwhere is my order?\n", **headers: str) -> bytes:
    """A small RFC 822 message; keyword headers use _ for - (Message_ID -> Message-ID)."""
    fields = {
        "From": "Jane Doe <jane@example.org>",
        "To": "support@northwind.example",
        "Subject": "Order question",
        "Date": "Tue, 5 Mar 2024 10:12:19 +0100",
        "Message-ID": "<abc123@example.org>",
    }
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    data = body.encode("utf-8") if isinstance(body, str) else body
    return head.encode("utf-8") + b"\r\n" + data


def parse_or_error(raw: bytes) -> InboundMessage | ParseError:
    try:
        return parse_message(raw)
    except ParseError as exc:
        return exc


# --- the CPython email test corpus -------------------------------------------------------

cpython_files = sorted(CPYTHON.glob("msg_*.txt")) if CPYTHON.is_dir() else []
needs_corpus = pytest.mark.skipif(
    not cpython_files, reason=f"CPython email corpus not found at {CPYTHON}"
)


@needs_corpus
@pytest.mark.parametrize("path", cpython_files, ids=lambda p: p.name)
def test_every_cpython_message_parses(path: Path) -> None:
    result = parse_or_error(path.read_bytes())
    assert isinstance(result, InboundMessage), result


@needs_corpus
def test_cpython_corpus_mostly_parses_and_known_messages_come_out_right() -> None:
    results = {p.name: parse_or_error(p.read_bytes()) for p in cpython_files}
    assert all(isinstance(r, InboundMessage) for r in results.values())
    # msg_19 is a bare message body, no header section at all: kept, with the defect noted.
    digest = results["msg_19.txt"]
    assert isinstance(digest, InboundMessage) and "no-header-section" in digest.defects
    assert "Today's Topics" in digest.text and digest.from_addr is None

    first = results["msg_01.txt"]
    assert isinstance(first, InboundMessage)
    assert first.subject == "This is a test message"
    assert first.message_id == "15090.61304.110929.45684@aaa.zzz.org"
    assert first.from_addr is not None and first.from_addr.email == "bbb@ddd.com"
    assert first.date == datetime(2001, 5, 4, 18, 5, 44, tzinfo=UTC)
    assert "Do you like this message?" in first.text

    encodings = results["msg_10.txt"]  # 7bit, quoted-printable, base64 parts side by side
    assert isinstance(encodings, InboundMessage)
    assert "This is a Base64 encoded message." in encodings.text
    assert "This has no Content-Transfer-Encoding: header." in encodings.text

    signed = results["msg_45.txt"]
    assert isinstance(signed, InboundMessage)
    assert signed.text == "This is the signed contents."
    assert [a.content_type for a in signed.attachments] == ["application/pgp-signature"]

    bounce = results["msg_16.txt"]
    assert isinstance(bounce, InboundMessage) and bounce.auto_reply == "bounce: multipart/report"
    bulk = results["msg_32.txt"]
    assert isinstance(bulk, InboundMessage) and bulk.auto_reply == "precedence: bulk"

    no_separator = results["msg_35.txt"]
    assert isinstance(no_separator, InboundMessage)
    assert "missing-header-body-separator" in no_separator.defects


@needs_corpus
def test_cpython_attachment_matches_the_stdlib_decoding() -> None:
    raw = (CPYTHON / "msg_07.txt").read_bytes()
    message = parse_message(raw)
    reference = email.message_from_bytes(raw, policy=policy.default)
    expected = [
        (part.get_filename(), part.get_content_type(), part.get_content())
        for part in reference.iter_attachments()
    ]
    assert [(a.filename, a.content_type, a.size, a.sha256) for a in message.attachments] == [
        (name, ctype, len(data), hashlib.sha256(data).hexdigest()) for name, ctype, data in expected
    ]


# --- headers -------------------------------------------------------------------------------


def test_rfc2047_subject_and_names_are_decoded() -> None:
    raw = mail(
        Subject="=?UTF-8?Q?R=C3=BCcksendung_Bestellung_=23A10488?=\r\n =?UTF-8?B?4oCTIEphY2tl?=",
        From="=?ISO-8859-1?Q?Sof=EDa_Mart=EDnez?= <sofia@example.es>",
    )
    message = parse_message(raw)
    assert message.subject == "Rücksendung Bestellung #A10488– Jacke"
    assert message.from_addr is not None
    assert message.from_addr.name == "Sofía Martínez"
    assert message.from_addr.email == "sofia@example.es"


def test_broken_encoded_words_fall_back_without_failing() -> None:
    unknown = parse_message(mail(Subject="=?x-klingon?Q?caf=E9?= order"))
    assert unknown.subject == "café order"  # unknown charset: read as UTF-8, then cp1252
    assert any("unknown-charset" in d for d in unknown.defects)

    bad_base64 = parse_message(mail(Subject="=?utf-8?B?###?= refund"))
    assert "refund" in bad_base64.subject


def test_raw_eight_bit_headers_are_read_as_utf8_or_latin1() -> None:
    utf8 = parse_message(mail(Subject="Rückgabe für Bestellung"))
    assert utf8.subject == "Rückgabe für Bestellung"
    latin1 = mail().replace(b"Subject: Order question", "Subject: Rückgabe".encode("latin-1"))
    assert parse_message(latin1).subject == "Rückgabe"


def test_unparsable_from_gives_none_and_a_defect() -> None:
    for bad in (
        "not an address at all",
        "alice@example.org)<bob@example.org>",
        "a@b.example <c@d.example>",
    ):
        message = parse_message(mail(From=bad))
        assert message.from_addr is None, bad
        assert "unparsable-from" in message.defects


def test_addresses_are_parsed_strictly_and_completely() -> None:
    message = parse_message(
        mail(
            To='"Doe, John" <john@example.org>, support@northwind.example,',
            Cc="undisclosed-recipients:;",
            Reply_To="Jane (home) <jane.home@Example.ORG>",
        )
    )
    assert [(a.name, a.email) for a in message.to] == [
        ("Doe, John", "john@example.org"),
        ("", "support@northwind.example"),
    ]
    assert message.cc == ()
    assert [a.email for a in message.reply_to] == ["jane.home@example.org"]
    assert message.reply_address == message.reply_to[0]

    spoof = parse_message(mail(Reply_To="x@example.org)<attacker@example.net>"))
    assert spoof.reply_to == ()
    assert spoof.reply_address == spoof.from_addr


def test_thread_headers_are_normalised() -> None:
    message = parse_message(
        mail(
            Message_ID="  <CAF+x=1@mail.example.org>  ",
            In_Reply_To="<parent@example.org> (Jane's message of Monday)",
            References="<root@example.org>\r\n <mid@example.org> <parent@example.org>",
        )
    )
    assert message.message_id == "CAF+x=1@mail.example.org"
    assert message.in_reply_to == "parent@example.org"
    assert message.references == ("root@example.org", "mid@example.org", "parent@example.org")
    unbracketed = parse_message(mail(Message_ID="1234.5678@legacy.example"))
    assert unbracketed.message_id == "1234.5678@legacy.example"
    assert parse_message(mail(Message_ID=None)).message_id is None


def test_dates_are_aware_utc_and_bad_dates_are_defects() -> None:
    assert parse_message(mail()).date == datetime(2024, 3, 5, 9, 12, 19, tzinfo=UTC)
    unknown_zone = parse_message(mail(Date="Tue, 5 Mar 2024 10:12:19 -0000"))
    assert unknown_zone.date == datetime(2024, 3, 5, 10, 12, 19, tzinfo=UTC)
    bad = parse_message(mail(Date="next Tuesday, probably"))
    assert bad.date is None and "bad-date" in bad.defects


def test_language_and_list_headers() -> None:
    message = parse_message(
        mail(Content_Language="de-DE, en", List_Id="News <news.northwind.example>")
    )
    assert message.language_hint == "de-de"
    assert message.list_id == "news.northwind.example"


# --- bodies --------------------------------------------------------------------------------


def multipart(*parts: tuple[str, str | bytes], subtype: str = "mixed", **headers: str) -> bytes:
    """A multipart message from (part headers, part body) pairs."""
    boundary = "b0undary-42"
    chunks = []
    for part_headers, body in parts:
        data = body.encode("utf-8") if isinstance(body, str) else body
        chunks.append(f"--{boundary}\r\n{part_headers}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return mail(
        body,
        MIME_Version="1.0",
        Content_Type=f'multipart/{subtype}; boundary="{boundary}"',
        **headers,
    )


def test_plain_text_is_preferred_to_html() -> None:
    raw = multipart(
        ("Content-Type: text/plain; charset=utf-8", "Plain version"),
        ("Content-Type: text/html; charset=utf-8", "<p>HTML version</p>"),
        subtype="alternative",
    )
    message = parse_message(raw)
    assert (message.text, message.body_source) == ("Plain version", "plain")


def test_html_is_read_when_the_plain_alternative_is_empty_or_missing() -> None:
    empty_plain = multipart(
        ("Content-Type: text/plain; charset=utf-8", "  \r\n"),
        ("Content-Type: text/html; charset=utf-8", "<p>Where is <b>order A1</b>?</p>"),
        subtype="alternative",
    )
    message = parse_message(empty_plain)
    assert message.body_source == "html"
    assert message.text == "Where is order A1?"
    html_only = mail(
        "<html><body><p>Hi</p><p>Order <i>A2</i></p></body></html>",
        Content_Type="text/html; charset=utf-8",
    )
    message = parse_message(html_only)
    assert message.body_source == "html"
    assert message.text.split() == ["Hi", "Order", "A2"]


def test_no_text_part_at_all_gives_body_source_none() -> None:
    raw = multipart(("Content-Type: application/pdf", "%PDF-1.4"))
    message = parse_message(raw)
    assert (message.text, message.body_source) == ("", "none")


@pytest.mark.parametrize(
    ("charset", "data", "expected"),
    [
        ("koi8-r", "Привет".encode("koi8-r"), "Привет"),
        ("iso-8859-1", "Grüße €".encode("cp1252"), "Grüße €"),  # labelled latin-1, really cp1252
        ("utf-8", "Grüße".encode("latin-1"), "Grüße"),  # mislabelled: falls back
        ("x-unknown-charset", "Grüße".encode(), "Grüße"),
        ("us-ascii", "naïve".encode(), "naïve"),
        ("unicode-escape", b"caf\xc3\xa9 \\u0041", "café \\u0041"),  # not a charset
    ],
)
def test_body_charsets_decode_with_fallbacks(charset: str, data: bytes, expected: str) -> None:
    raw = mail(
        data, Content_Type=f"text/plain; charset={charset}", Content_Transfer_Encoding="8bit"
    )
    assert parse_message(raw).text == expected


def test_control_characters_and_crlf_are_cleaned() -> None:
    message = parse_message(mail("Order\x00 A1\r\n\r\n\r\n\r\n\r\nThanks\x07"))
    assert message.text == "Order A1\n\nThanks"


def test_attachments_are_listed_with_size_and_hash_but_not_kept() -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    image = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    raw = multipart(
        ("Content-Type: text/plain", "Invoice attached."),
        (
            "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf",
            base64.encodebytes(pdf),
        ),
        (
            'Content-Type: image/png; name="=?UTF-8?Q?sch=C3=A4den.png?="\r\n'
            "Content-Transfer-Encoding: base64\r\nContent-Disposition: inline",
            base64.encodebytes(image),
        ),
    )
    message = parse_message(raw)
    assert message.text == "Invoice attached."
    assert [(a.filename, a.content_type, a.size, a.sha256) for a in message.attachments] == [
        ("Rechnung März.pdf", "application/pdf", len(pdf), hashlib.sha256(pdf).hexdigest()),
        ("schäden.png", "image/png", len(image), hashlib.sha256(image).hexdigest()),
    ]
    values = [getattr(message, f.name) for f in dataclasses.fields(message)]
    assert not any(isinstance(v, bytes | bytearray) for v in values)


def test_raw_hash_and_size_identify_the_bytes() -> None:
    raw = mail()
    message = parse_message(raw)
    assert (message.sha256, message.size) == (hashlib.sha256(raw).hexdigest(), len(raw))


# --- HTML: what the reader cannot see is not text -------------------------------------------


@pytest.mark.parametrize(
    "hidden",
    [
        '<span style="display:none">SECRET</span>',
        '<div style="visibility: hidden">SECRET</div>',
        '<span style="font-size:0px">SECRET</span>',
        '<span style="FONT-SIZE: 1px !important">SECRET</span>',
        '<span style="color:#fff">SECRET</span>',
        '<span style="color: white">SECRET</span>',
        '<span style="color:rgb(255, 255, 255)">SECRET</span>',
        '<font color="#FFFFFF">SECRET</font>',
        '<div style="background:#222"><span style="color:#232323">SECRET</span></div>',
        '<span style="opacity:0">SECRET</span>',
        '<div style="max-height:0;overflow:hidden">SECRET</div>',
        "<p hidden>SECRET</p>",
        '<style>.x{display:none}</style><p class="a x">SECRET</p>',
        "<script>var SECRET = 1;</script>",
    ],
)
def test_hidden_html_text_is_dropped(hidden: str) -> None:
    html = f"<html><body><p>Please refund order A10476.</p>{hidden}<p>Thanks</p></body></html>"
    message = parse_message(mail(html, Content_Type="text/html; charset=utf-8"))
    assert "SECRET" not in message.text
    assert "Please refund order A10476." in message.text


def test_visible_coloured_text_is_kept() -> None:
    html = (
        '<table bgcolor="#003366"><tr><td><span style="color:#ffffff">Track order A1</span>'
        '</td></tr></table><p style="color:#333">Grey but readable</p>'
        '<p style="font-size:14px">Normal size</p>'
    )
    message = parse_message(mail(html, Content_Type="text/html"))
    for visible in ("Track order A1", "Grey but readable", "Normal size"):
        assert visible in message.text


# --- quoted history and signatures --------------------------------------------------------


GMAIL = """Hi,

the parcel for order A10234 still hasn't arrived.

Thanks a lot,
Jane

On Mon, Mar 4, 2024 at 4:02 PM Northwind Outfitters Support <
support@northwind.example> wrote:

> Hello Jane,
> your order has shipped.
"""

OUTLOOK = """Hello Sam,

we'd like 40 jackets instead of 30.

Best regards,
Mark Thompson
Procurement Lead | Contoso Ltd

________________________________
From: Northwind Support <support@northwind.example>
Sent: Thursday, March 14, 2024 4:12 PM
To: Mark Thompson <mark@contoso.example>
Subject: Re: Quote

Hello Mark, here is the quote.
"""

APPLE = """Yes, please ship it to the new address.

Sent from my iPhone

> On 5 Mar 2024, at 10:12, Northwind Support <support@northwind.example> wrote:
>
> Shall we change the address for order A10455?
"""

GERMAN = """Hallo,

die Jacke ist immer noch nicht da.

Viele Grüße
Max

Am 05.03.2024 um 10:12 schrieb Northwind Support <support@northwind.example>:
> Ihre Bestellung A10488 wurde versandt.
"""

FRENCH = """Bonjour,

toujours rien reçu.

Le mar. 5 mars 2024 à 10:12, Northwind Support <support@northwind.example> a écrit :
> Votre commande a été expédiée.
"""

ORIGINAL_MESSAGE = """Please cancel it.

-----Original Message-----
From: Northwind Support
Sent: Monday, March 4, 2024
Your order A10402 is confirmed.
"""

DASH_SIGNATURE = """The app still crashes on start.

--
Ana Souza
Product Designer, Example GmbH
"""


@pytest.mark.parametrize(
    ("body", "new", "quoted_start", "signature_start"),
    [
        (
            GMAIL,
            "the parcel for order A10234 still hasn't arrived.",
            "On Mon, Mar 4",
            "Thanks a lot,",
        ),
        (
            OUTLOOK,
            "we'd like 40 jackets instead of 30.",
            "From: Northwind Support",
            "Best regards,",
        ),
        (
            APPLE,
            "Yes, please ship it to the new address.",
            "> On 5 Mar 2024",
            "Sent from my iPhone",
        ),
        (GERMAN, "die Jacke ist immer noch nicht da.", "Am 05.03.2024", "Viele Grüße"),
        (FRENCH, "toujours rien reçu.", "Le mar. 5 mars", ""),
        (ORIGINAL_MESSAGE, "Please cancel it.", "-----Original Message-----", ""),
        (DASH_SIGNATURE, "The app still crashes on start.", "", "--\nAna Souza"),
    ],
    ids=["gmail", "outlook", "apple", "german", "french", "original-message", "dash-dash"],
)
def test_replies_are_split_into_new_text_quote_and_signature(
    body: str, new: str, quoted_start: str, signature_start: str
) -> None:
    message = parse_message(mail(body))
    assert message.new_text.splitlines()[-1] == new
    assert message.quoted.startswith(quoted_start)
    assert message.signature.startswith(signature_start)
    if quoted_start:
        assert quoted_start not in message.new_text
    assert message.text.count(new) == 1


def test_inline_replies_keep_the_customers_lines() -> None:
    body = "> Which size do you need?\nM, please.\n\n> Which colour?\nThe green one.\n"
    message = parse_message(mail(body))
    assert message.new_text == "M, please.\n\nThe green one."
    assert message.quoted == "> Which size do you need?\n> Which colour?"


def test_sentences_that_start_like_sign_offs_are_not_signatures() -> None:
    body = (
        "Hi,\n\nThanks, I got the parcel.\nBut the jacket in order A1 is the wrong size.\n"
        "Regards, here is my complaint in detail:\nthe zip is broken too.\n"
    )
    message = parse_message(mail(body))
    assert "the zip is broken too." in message.new_text
    assert message.signature == ""


def test_prose_mentioning_wrote_is_not_a_quote_header() -> None:
    body = "Hello,\n\nYour confirmation email wrote:\nthat delivery is free. Please check.\n"
    message = parse_message(mail(body))
    assert "that delivery is free." in message.new_text
    assert message.quoted == ""
    attribution = "Please check.\n\nSam wrote:\n> Delivery is free.\n"
    assert parse_message(mail(attribution)).quoted == "Sam wrote:\n> Delivery is free."


# --- refusing non-mail, and staying bounded on hostile input -----------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n\t\n",
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    ],
    ids=["empty", "whitespace", "png"],
)
def test_non_email_input_raises_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(raw)
    assert "\n" not in str(info.value)


def test_oversized_header_section_is_refused() -> None:
    raw = b"Subject: x\r\n" + b"X-Filler: " + b"a" * 100 + b"\r\n" * 0
    raw += b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 100) for i in range(12_000))
    with pytest.raises(ParseError, match="header section"):
        parse_message(raw + b"\r\nbody")


@pytest.mark.timeout(30)
def test_deeply_nested_mime_is_bounded() -> None:
    depth = 3000
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    raw = (
        b"From: a@example.org\r\nSubject: deep\r\n"
        + head
        + b"Content-Type: text/plain\r\n\r\nhi\r\n"
    )
    result = parse_or_error(raw)
    assert isinstance(result, InboundMessage | ParseError)
    if isinstance(result, InboundMessage):
        assert "mime-too-deep" in result.defects


@pytest.mark.timeout(30)
def test_many_parts_are_capped() -> None:
    parts = [("Content-Type: application/octet-stream", "x")] * 2000
    message = parse_message(multipart(*parts))
    assert "too-many-mime-parts" in message.defects
    assert len(message.attachments) < 300


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "body",
    [
        "On " * 40_000 + "wrote:\n",
        "On Monday " + "x" * 200_000 + "\n" + "y" * 200_000 + " wrote:\n> quoted\n",
        "\n" * 300_000 + "text",
        ("From: a\nSent: b\n" * 20_000),
        "Thanks,\n" * 50_000,
        "> " * 100_000,
    ],
    ids=["on-on-on", "long-wrapped-header", "blank-lines", "header-blocks", "sign-offs", "quotes"],
)
def test_pathological_text_bodies_finish_quickly(body: str) -> None:
    message = parse_message(mail(body))
    assert len(message.text) <= 100_000


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "html",
    [
        "<div>" * 20_000 + "deep" + "</div>" * 20_000,
        "<table>" + "<tr><td>cell</td></tr>" * 20_000 + "</table>",
        '<p style="color:#fff">' * 5_000 + "x",
        "<style>" + ".a{display:none}" * 10_000 + "</style><p class=a>x</p>",
        "<" * 500_000,
    ],
    ids=["deep", "big-table", "many-styles", "many-rules", "angle-brackets"],
)
def test_pathological_html_finishes_quickly(html: str) -> None:
    result = parse_or_error(mail(html, Content_Type="text/html"))
    assert isinstance(result, InboundMessage)


def _mutations(seed: int, count: int) -> list[bytes]:
    """Random bytes plus byte-level mutations of the sample emails (seeded)."""
    rng = random.Random(seed)
    seeds = [p.read_bytes() for p in sorted(SAMPLES.glob("*.eml"))]
    if cpython_files:
        seeds += [p.read_bytes() for p in cpython_files]
    cases: list[bytes] = []
    for i in range(count):
        if i % 5 == 0:
            cases.append(rng.randbytes(rng.randint(0, 4000)))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 30)):
            op = rng.random()
            pos = rng.randrange(len(data) + 1)
            if op < 0.4 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op < 0.6:
                data[pos:pos] = rng.choice(
                    [b"\r\n", b"\n\n", b"--", b"=?utf-8?b?", b"?=", b"<", b">", b";", b'"', b"\\",
                     b"boundary=", b"Content-Type: multipart/mixed; boundary=x\n", b"\x00", b"\xff"]
                )  # fmt: skip
            elif op < 0.8:
                del data[pos : pos + rng.randint(1, 50)]
            else:
                start = rng.randrange(len(data) + 1)
                data[pos:pos] = data[start : start + rng.randint(1, 200)]
        cases.append(bytes(data))
    return cases


@pytest.mark.timeout(120)
def test_fuzzed_input_gives_a_message_or_a_parse_error() -> None:
    outcomes = {"ok": 0, "error": 0}
    for raw in _mutations(seed=20240305, count=1500):
        result = parse_or_error(raw)  # anything else propagates and fails the test
        outcomes["ok" if isinstance(result, InboundMessage) else "error"] += 1
        # An internal failure is reported as a ParseError too, chained to its cause: here
        # it would be a bug, since every input in this set is refusable on its merits.
        assert not isinstance(result, ParseError) or result.__cause__ is None, result
        if isinstance(result, InboundMessage):
            # what the audit log and JSON output will hold must be encodable text
            for value in (result.text, result.new_text, result.subject):
                value.encode("utf-8")
                assert "\x00" not in value
    assert outcomes["ok"] > 800  # mutated mail is still mostly mail
    assert outcomes["error"] > 100  # and random bytes mostly are not


@pytest.mark.parametrize(
    "raw",
    [
        b"Just some text someone pasted,\nwith no headers at all.\n",
        b"Hello: world\n\nnot a mail header in sight\n",
    ],
    ids=["plain-text", "unknown-headers"],
)
def test_text_without_mail_headers_is_kept_with_a_defect(raw: bytes) -> None:
    message = parse_message(raw)
    assert "no-header-section" in message.defects
    assert message.from_addr is None and message.message_id is None
    assert raw.decode().splitlines()[-1].strip() in message.text
