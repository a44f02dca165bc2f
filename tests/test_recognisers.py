"""Each recogniser on its own: values, spans, and check-digit failures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailbot.config import FieldSpec, config_from_dict
from mailbot.errors import ConfigError
from mailbot.fields import RuleExtractor, build_schema
from mailbot.fields.checks import check_problem, iban_problem, luhn_ok, mod11_ok
from mailbot.fields.dates import find_dates
from mailbot.fields.money import find_money
from mailbot.fields.patterns import find_cards, find_cued, find_emails, find_ibans, find_urls
from mailbot.fields.people import find_addresses, find_people
from mailbot.fields.phones import find_phones

REF = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)


def _spans_ok(text: str, candidates) -> None:
    for c in candidates:
        assert 0 <= c.start < c.end <= len(text)


# --- check digits -----------------------------------------------------------------------


def test_luhn() -> None:
    assert luhn_ok("4242424242424242")
    assert luhn_ok("79927398713")
    assert not luhn_ok("4242424242424241")
    assert not luhn_ok("")


def test_mod11() -> None:
    # 12345: 5*2 + 4*3 + 3*4 + 2*5 + 1*6 = 50; 50 mod 11 = 6; 11 - 6 = 5
    assert mod11_ok("12345-5")
    assert mod11_ok("123455")
    assert not mod11_ok("12345-4")
    # 10003: 3*2 + 1*6 = 12; 12 mod 11 = 1; 11 - 1 = 10, written X
    assert mod11_ok("10003-X")
    assert not mod11_ok("10003-0")
    assert check_problem("mod11", "12345-4") == "mod-11 check digit does not match"


def test_iban_checks() -> None:
    assert iban_problem("DE89 3704 0044 0532 0130 00") is None
    assert iban_problem("GB29NWBK60161331926819") is None
    assert "mod-97" in iban_problem("DE89 3704 0044 0532 0130 01")
    assert "22 characters" in iban_problem("DE89 3704 0044 0532 0130")


# --- ids after cue words ----------------------------------------------------------------


def _order_spec(**overrides) -> FieldSpec:
    spec = {s.name: s for s in build_schema().specs}["order_id"]
    return spec.model_copy(update=overrides)


def test_order_id_with_and_without_cue() -> None:
    text = "Where is #A10234? Also order number 48213, and Bestellung Nr. 55-1029."
    found = list(find_cued(_order_spec(), text))
    values = sorted({c.value for c in found})
    assert values == ["48213", "55-1029", "A10234"]
    for c in found:
        assert text[c.start : c.end] == c.value  # the span excludes the "#"


def test_order_id_ignores_quantities_and_words() -> None:
    text = "I want to order 3 jackets; the order was late and the order is broken."
    assert list(find_cued(_order_spec(), text)) == []


def test_order_id_list_after_one_cue() -> None:
    text = "orders A10701, A10702 and A10703 never arrived"
    assert [c.value for c in find_cued(_order_spec(), text)][:3] == ["A10701", "A10702", "A10703"]


def test_configured_check_digit_rejects_order_id() -> None:
    spec = _order_spec(check="luhn", anywhere="")
    good, bad = "order 79927398713", "order 79927398710"
    assert [c.problem for c in find_cued(spec, good)] == [None]
    assert [c.problem for c in find_cued(spec, bad)] == ["Luhn check digit does not match"]


def _invoices(text: str) -> list[str]:
    extraction = RuleExtractor().extract(text, build_schema(), reference=REF)
    return [str(v) for v in extraction.values("invoice_number")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my bill #40913 is wrong", ["40913"]),
        ("the bill 52207 has my old address", ["52207"]),
        ("INVOICE No: 00231 charged twice", ["00231"]),
        ("receipts 3301 & 3302 please", ["3301", "3302"]),
        ("die Rechnung Nr. 2024-118", ["2024-118"]),
        ("RECHNUNG-NR.: RE-2026-00451", ["RE-2026-00451"]),
        ("Rechnungsnr. 2026/0042 bitte", ["2026/0042"]),
        ("Rechnungen 4410 und 4411", ["4410", "4411"]),
        ("facture n° 8812", ["8812"]),
        ("Facture N°8813 reçue", ["8813"]),
        ("factura nº 4711", ["4711"]),
        ("FACTURA Núm. 3321", ["3321"]),
        ("fattura n. 5531/2026", ["5531/2026"]),
        ("le fatture 7701 e 7702", ["7701", "7702"]),
        ("factuur 7731 klopt niet", ["7731"]),
        ("de facturen 3310 en 3311", ["3310", "3311"]),
        ("fatura n.º 991", ["991"]),
        ("Rechnung #2025 fehlt", ["2025"]),  # with a number sign a year-like id is an id
        ("Rechnungsnummer 2025 fehlt", ["2025"]),  # so with a number word in the cue
        ("factures 2210 en 2025", ["2210"]),  # "en 2025": in 2025
        ("deux factures (n° 4410-A et n° 4410-B)", ["4410-A", "4410-B"]),
        ("die Rechnung mit der Nummer 4711", ["4711"]),
        ("la factura con el número 4712", ["4712"]),
        ("invoice-number 4713", ["4713"]),
    ],
)
def test_invoice_numbers_as_customers_write_them(text: str, expected: list[str]) -> None:
    assert _invoices(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "my bill of $40 is too high",
        "the bill was 2400 this month",  # an amount without its currency
        "die Rechnung war 1200 Euro",
        "Rechnung 189,90 ist falsch",
        "the invoice for March never came",
        "invoice 03/2026 is missing",  # a month
        "Rechnung 2025 fehlt",  # a year
        "invoice 31/02/2026",  # an impossible date is no id either
        "bill 0800 123 4567",  # a phone number
        "Hi Bill, order 48213 arrived",
        "upon receipt 3 days later it broke",
        "please send all invoices from 2025",
        "recibo 150 correos al día",  # Spanish "I get 150 emails a day": a quantity
        "Rechnung mit 150 Positionen",
    ],
)
def test_things_near_invoice_words_that_are_no_invoice_numbers(text: str) -> None:
    assert _invoices(text) == []


# --- money ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("total €1.234,50 incl.", "1234.50", "EUR"),
        ("charged $64.00 twice", "64.00", "USD"),
        ("Betrag 142,50 EUR", "142.50", "EUR"),
        ("owe me £20", "20.00", "GBP"),
        ("paid CHF 35.- extra", "35.00", "CHF"),
        ("USD 1,299.99 in total", "1299.99", "USD"),
        ("129,90 € bitte", "129.90", "EUR"),
        ("20 euros for returns", "20.00", "EUR"),
        ("C$45.00 shipping", "45.00", "CAD"),
        ("¥5000 fee", "5000", "JPY"),
    ],
)
def test_money_formats(text: str, amount: str, currency: str) -> None:
    found = list(find_money(text))
    assert [c.value for c in found] == [(amount, currency)]
    c = found[0]
    assert amount.split(".")[0][-2:] in text[c.start : c.end].replace(".", "").replace(",", "")


def test_money_needs_a_currency() -> None:
    assert list(find_money("size 44, 3 items, version 2.3.1, 10,000 mm")) == []


# --- dates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("arrived on 24 February", "2026-02-24"),
        ("delivered 2026-03-07", "2026-03-07"),
        ("due 07/03/2026", "2026-03-07"),
        ("bestellt am 7. März", "2026-03-07"),
        ("placed on March 2, 2026", "2026-03-02"),
        ("el 5 de marzo", "2026-03-05"),
        ("on the 2nd of March", "2026-03-02"),
        ("it came yesterday", "2026-03-15"),
        ("3 days ago", "2026-03-13"),
        ("last Friday", "2026-03-13"),
        ("ordered 20 December", "2025-12-20"),  # closest to the reference: last December
    ],
)
def test_dates(text: str, iso: str) -> None:
    found = [c for c in find_dates(text, REF, languages=("en", "de", "es")) if not c.problem]
    assert [c.value for c in found] == [iso]


def test_relative_words_follow_the_language() -> None:
    french = "Bonjour, mon colis devait arriver hier mais le suivi ne bouge plus."
    german = "Ich bin hier und warte auf mein Paket, bitte helfen Sie mir."
    langs = ("en", "de", "fr")
    assert [c.value for c in find_dates(french, REF, languages=langs)] == ["2026-03-15"]
    assert list(find_dates(german, REF, languages=langs)) == []


def test_numeric_date_order_and_impossible_dates() -> None:
    assert [c.value for c in find_dates("on 03/14/2026", REF)] == ["2026-03-14"]
    assert [c.value for c in find_dates("on 03/04/2026", REF, date_order="MDY")] == ["2026-03-04"]
    bad = list(find_dates("on 31/02/2026", REF))
    assert bad[0].problem == "no such calendar date"


def test_may_the_verb_is_not_a_date() -> None:
    assert list(find_dates("you may 5 times try", REF)) == []


# --- contacts ---------------------------------------------------------------------------


def test_emails_and_urls() -> None:
    text = "Mail Maria.K@Example.COM or see https://shop.example/p/1?x=2). Also www.shop.example."
    emails = list(find_emails(text))
    assert [c.value for c in emails] == ["Maria.K@example.com"]
    urls = [text[c.start : c.end] for c in find_urls(text)]
    assert urls == ["https://shop.example/p/1?x=2", "www.shop.example"]


def test_phones_international_national_and_bare_digits() -> None:
    text = "Call +44 20 7946 0958 or (415) 867-5309; ref 4158675309 is not a phone."
    found = list(find_phones(text, ("US", "GB")))
    assert [c.value for c in found] == ["+442079460958", "+14158675309"]
    _spans_ok(text, found)


def test_german_national_number_in_german_mail() -> None:
    text = "Bitte rufen Sie mich an: 030 901820."
    assert [c.value for c in find_phones(text, ("US", "GB", "DE"), "de")] == ["+4930901820"]


@pytest.mark.parametrize(
    ("text", "regions", "language", "e164"),
    [
        # A German cue word picks the German reading over a valid British one.
        ("Telefon: 030 12345678", ("US", "GB", "DE"), "en", "+493012345678"),
        ("Handy 0171 2345678", ("US", "GB", "DE"), "en", "+491712345678"),
        # The message's language counts even where its regions are not configured.
        ("o meu telemóvel é 912 345 678", ("US",), "pt", "+351912345678"),
        # A cued number may come from any configured region.
        ("Tel. 044 668 18 00", ("GB", "CH"), "en", "+41446681800"),
        ("Tél. : 01 42 68 53 00", ("US", "FR"), "fr", "+33142685300"),
    ],
)
def test_national_numbers_by_cue_language_and_regions(text, regions, language, e164) -> None:
    assert [c.value for c in find_phones(text, regions, language)] == [e164]


def test_dates_are_not_phone_numbers() -> None:
    text = "bestellt am 07.03.2026, Tel. 030 12345678"
    assert [c.value for c in find_phones(text, ("DE",), "de", thorough=True)] == ["+493012345678"]


def test_iban_good_and_bad() -> None:
    good = list(find_ibans("IBAN GB29 NWBK 6016 1331 9268 19 please"))
    assert [(c.value, c.problem) for c in good] == [("GB29NWBK60161331926819", None)]
    bad = list(find_ibans("IBAN DE89 3704 0044 0532 0130 01"))
    assert bad[0].problem == "IBAN check digits (mod-97) do not match"


def test_cards_are_masked_and_luhn_checked() -> None:
    found = list(find_cards("Visa 4242 4242 4242 4242 and card 4242 4242 4242 4241"))
    assert [(c.value, c.problem) for c in found] == [
        ("**** 4242", None),
        ("**** 4241", "Luhn check digit does not match"),
    ]


# --- names and addresses ----------------------------------------------------------------


def test_names_from_greeting_sign_off_intro_and_title() -> None:
    text = (
        "Hi Sam,\n\nmy name is Priya Raman. Mrs. Helen Parker ordered it.\n\n"
        "Kind regards,\nGeorge Parker"
    )
    names = [c.value for c in find_people(text)]
    assert names == ["Sam", "Priya Raman", "Helen Parker", "George Parker"]


def test_names_from_the_header_are_found_in_the_body() -> None:
    text = "Okafor here again: the boots were returned by D. Okafor on Monday."
    assert [c.value for c in find_people(text, ["Daniel Okafor"])] == ["Okafor", "Okafor"]


def test_no_names_in_team_greetings_and_prose() -> None:
    text = "Hi Northwind team,\n\nI'm German and I am Happy with the Fjell Jacket.\nThanks!"
    assert list(find_people(text)) == []


def test_addresses() -> None:
    text = "Please ship to Lindenstraße 12, 10969 Berlin or 221B Baker Street, London NW1 6XE."
    assert [c.value for c in find_addresses(text)] == [
        "Lindenstraße 12, 10969 Berlin",
        "221B Baker Street, London NW1 6XE",
    ]


# --- schema and config ------------------------------------------------------------------


def test_custom_field_with_check_digit_via_config() -> None:
    config = config_from_dict(
        {
            "fields": {
                "custom": [
                    {
                        "name": "loyalty_number",
                        "type": "pattern",
                        "pattern": r"\d{11}",
                        "cues": ["loyalty number"],
                        "check": "luhn",
                        "required_for": ["account_access"],
                    }
                ]
            }
        }
    )
    schema = build_schema(config.fields)
    text = "My loyalty number 79927398710 does not work"
    extraction = RuleExtractor().extract(text, schema, intent="account_access", reference=REF)
    assert "loyalty_number" not in extraction.fields
    assert extraction.missing == ("loyalty_number",)
    assert [(r.name, r.raw) for r in extraction.rejected] == [("loyalty_number", "79927398710")]


def test_bad_field_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"fields\.custom.*regular expression"):
        config_from_dict({"fields": {"custom": [{"name": "x", "type": "pattern", "pattern": "("}]}})
    with pytest.raises(ConfigError, match="enum field needs values"):
        config_from_dict({"fields": {"custom": [{"name": "x", "type": "enum"}]}})
    config = config_from_dict({"fields": {"required": {"refund": ["nope"]}}})
    with pytest.raises(ConfigError, match="unknown field"):
        build_schema(config.fields)


def test_places_longest_first_and_known_limits() -> None:
    from mailbot.fields.places import find_places

    text = "From Frankfurt am Main to New York, then Bad Homburg; reading in Nice weather."
    assert [c.value for c in find_places(text)] == ["Frankfurt am Main", "New York"]
    # Small towns are not in the list; "Nice" and "Reading" are left out as everyday words.
