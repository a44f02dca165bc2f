"""Money a reply commits us to, in the seven supported languages: held back above
`route.max_promised_amount` whatever the wording, even when the customer named the amount;
a sentence that only reports what the customer told us is not a promise."""

from __future__ import annotations

import pytest

from mailbot.compose.safety import ReplyContext, SafetyChecker
from mailbot.config import RouteSettings
from mailbot.fields import build_schema, extract_message
from mailbot.parse.mime import parse_message
from tests.support.mail import support_email

# The customer names the amount: the "amount" check lets it through, only the promise
# check stands between the email and a reply promising it.
BODY = ("Hello,\n\nI paid €5,000 for order A10234 and it arrived broken. I want all 5000 EUR "
        "back today, transferred to my account.\n\nEmma")
POLICY = "Orders over €1,000 ship free of charge. Refunds are paid to the original card."

PROMISES = [
    # en, with and without the usual keywords
    "We will pay €5,000 into your account today.",
    "€5,000 will be in your account by Friday.",
    "You'll receive 5000 EUR within three days.",
    "A refund of €5,000 has been approved and will be transferred to your IBAN today.",
    "We are sending you €5,000 as a goodwill gesture.",
    "Good news: €5,000 is on its way to you.",
    "We can compensate you with €5,000.",
    "Expect €5,000 on your card shortly.",
    "Your €5,000 comes back in full.",
    "€5,000 back, as a gesture of goodwill.",
    "We will transfer 5000 to you.",
    "We have approved a €5k credit.",
    "We will refund five thousand euros.",
    "You paid €5,000, which we refund in full.",
    "You paid €5,000. We will refund it today.",
    # de
    "Wir überweisen Ihnen 5.000 € noch heute.",
    "Sie erhalten 5.000 € auf Ihr Konto.",
    "5.000 € werden Ihrem Konto gutgeschrieben.",
    # fr
    "Nous vous rembourserons 5 000 € aujourd'hui.",
    "Vous recevrez 5 000 euros sur votre compte.",
    "5 000 € seront versés sur votre compte demain.",
    # es
    "Le reembolsaremos 5.000 € hoy mismo.",
    "Recibirá 5.000 € en su cuenta.",
    "Hemos transferido 5.000 € a su cuenta.",
    # it
    "Le rimborseremo 5.000 € oggi stesso.",
    "Riceverà 5.000 € sul suo conto.",
    "Abbiamo accreditato 5.000 € sul suo conto.",
    # nl
    "Wij betalen u € 5.000 vandaag terug.",
    "U ontvangt € 5.000 op uw rekening.",
    "€ 5.000 wordt op uw rekening gestort.",
    # pt
    "Vamos reembolsar 5.000 € hoje.",
    "Receberá 5.000 € na sua conta.",
    "Transferimos 5.000 € para a sua conta.",
]

REPORTS = [
    "You wrote that you paid €5,000 for order A10234.",
    "Your order of €5,000 arrived damaged, and we are sorry about that.",
    "As you mentioned, the invoice shows €5,000.",
    "Your order was €5,000.",
    "Sie haben 5.000 € für die Bestellung A10234 bezahlt.",
    "Ihre Bestellung über 5.000 € ist beschädigt angekommen.",
    "Vous avez payé 5 000 € pour la commande A10234.",
    "Votre commande de 5 000 € est arrivée abîmée.",
    "Usted pagó 5.000 € por el pedido A10234.",
    "Su pedido de 5.000 € llegó dañado.",
    "Lei ha pagato 5.000 € per l'ordine A10234.",
    "Il suo ordine di 5.000 € è arrivato danneggiato.",
    "U heeft € 5.000 betaald voor bestelling A10234.",
    "Uw bestelling van € 5.000 is beschadigd aangekomen.",
    "Você pagou 5.000 € pela encomenda A10234.",
    "O seu pedido de 5.000 € chegou danificado.",
]


def checks(reply: str, passages: tuple[str, ...] = ()) -> list[str]:
    message = parse_message(support_email(1, body=BODY, sender="Emma <emma@example.com>"))
    _, extraction = extract_message(message, build_schema(), intent="refund")
    context = ReplyContext(message=message, extraction=extraction, passages=passages,
                           own_addresses=["support@northwind.example"],
                           recipients=["emma@example.com"], language="en")
    report = SafetyChecker(RouteSettings(max_promised_amount=500)).check(reply, context)
    return [v.check for v in report.violations]


@pytest.mark.parametrize("reply", PROMISES)
def test_a_commitment_above_the_limit_is_held_back_whatever_the_wording(reply: str) -> None:
    assert "promise" in checks(reply)


@pytest.mark.parametrize("reply", REPORTS)
def test_repeating_what_the_customer_told_us_is_not_a_promise(reply: str) -> None:
    assert checks(reply) == []


def test_amounts_up_to_the_limit_may_be_promised() -> None:
    body_amount = "We will refund 400 EUR today."
    message = parse_message(support_email(1, body="Please refund the 400 EUR.",
                                          sender="Emma <emma@example.com>"))
    _, extraction = extract_message(message, build_schema(), intent="refund")
    context = ReplyContext(message=message, extraction=extraction, language="en",
                           recipients=["emma@example.com"])
    checker = SafetyChecker(RouteSettings(max_promised_amount=500))
    assert checker.check(body_amount, context).passed
    assert not SafetyChecker(RouteSettings(max_promised_amount=300)).check(
        body_amount, context).passed


def test_policy_text_quoted_from_the_knowledge_base_is_not_a_promise() -> None:
    assert checks(f"Good to know: {POLICY}", passages=(POLICY,)) == []
    # The same amount in the model's own words commits us.
    assert "promise" in checks("We will pay you €1,000 for the trouble.", passages=(POLICY,))


def test_order_numbers_and_years_are_not_amounts() -> None:
    assert checks("We will refund order A10234 as soon as it is back, in 2026.") == []


REPORTED = ["You wrote that you paid {a}", "As you mentioned, your invoice shows {a}",
            "Your order of {a} arrived late", "You were charged {a}"]
AMOUNTS = ["€5,000", "5.000 €", "EUR 5000", "5000 EUR", "€ 5.000,00"]
COMMITTING_TAILS = [", and we will refund it.", ", which goes back to your card.",
                    "; you will get it back.", ", and it has been approved for a refund.",
                    ". We are refunding all of it.", ". It will be transferred to you."]
NEUTRAL_TAILS = [".", ", and we are sorry about that.", "; a colleague looks into it."]


@pytest.mark.parametrize("report", REPORTED)
@pytest.mark.parametrize("amount", AMOUNTS)
def test_a_report_of_the_customers_amount_stays_a_report_until_we_commit_to_it(
    report: str, amount: str
) -> None:
    for tail in NEUTRAL_TAILS:
        assert checks(report.format(a=amount) + tail) == [], tail
    for tail in COMMITTING_TAILS:
        assert "promise" in checks(report.format(a=amount) + tail), tail
