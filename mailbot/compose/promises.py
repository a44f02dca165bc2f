"""Which amounts in a reply body does the reply commit us to? (used by the safety checks)

A reply that says "we will pay €5,000 into your account", "€5,000 will be in your account
today" or "you'll receive 5000 EUR" commits the company to money, whatever words it uses and
whether or not the customer named the amount first. A reply that repeats what the customer
told us ("you wrote that you paid €5,000", "your order of €5,000") commits us to nothing.

So the test is turned around: instead of looking for promise keywords, which a rephrasing
escapes, every amount above the limit counts as promised unless its sentence is a report of
the customer's own words or transactions (the customer is the one who wrote, paid, ordered;
or it is "your order/invoice/payment of ...") and neither that sentence nor another in its
paragraph commits us to a payment (future or modal verbs, "approved", "into your account",
"you'll receive", "we ... refund"). A sentence in a language or phrasing these patterns do
not know is therefore held back, never let through.

The patterns cover en, de, fr, es, it, nl and pt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from mailbot.fields.money import find_money

# --- what a customer's own fact looks like ---------------------------------------------------
# A reporting or transaction verb with the customer as its subject, "as you wrote", or the
# customer's own order/invoice/payment. Refunds and credits are not in the noun list: "your
# refund of €5,000" is a claim about what we do, not something the customer gave us.
_ATTRIBUTION = re.compile(
    r"""\b(?:
    # en
    you(?:\s+(?:have|had))?\s+(?:wrote|written|write|said|say|mentioned|mention|told|tell
        |reported|report|stated|state|explained|noted|described|quoted|claimed|claim|paid
        |spent|ordered|bought|purchased|were\s+charged|got\s+charged|were\s+billed|sent
        |transferred|entered)
    | as\s+you\s+(?:wrote|write|said|say|mentioned|mention|explained|described|noted)
    | according\s+to\s+your
    | your\s+(?:order|orders|invoice|bill|payment|purchase|charge|booking|subscription|total
        |transaction|statement|receipt|basket|cart|message|e-?mail|letter)\b
    # de
    | sie\s+(?:haben|hatten)\b[^!?\n]{0,80}?\b(?:geschrieben|erwähnt|angegeben|mitgeteilt
        |berichtet|bezahlt|gezahlt|überwiesen|bestellt|gekauft|erhalten)
    | sie\s+(?:schrieben|schreiben|erwähnten|erwähnen|zahlten|bezahlten|bestellten|kauften)
    | wie\s+sie\s+(?:schreiben|schrieben|erwähnen|erwähnten|berichten|angeben)
    | laut\s+ihrer | ihr(?:e|er|em|en)?\s+(?:bestellung|rechnung|zahlung|kauf|einkauf|auftrag
        |abonnement|buchung|nachricht|e-?mail)
    # fr
    | vous\s+(?:avez|aviez)\s+(?:écrit|mentionné|indiqué|signalé|dit|payé|réglé|versé
        |commandé|acheté|été\s+débité|été\s+facturé|reçu)
    | vous\s+(?:écrivez|mentionnez|indiquez|signalez|dites)
    | comme\s+vous\s+(?:l'|le\s+)?(?:avez\s+)?(?:écrit|indiqué|mentionné|dit|écrivez|indiquez)
    | selon\s+votre | votre\s+(?:commande|facture|paiement|achat|abonnement|transaction
        |message|e-?mail|courriel|réservation|panier)
    # es
    | (?:usted\s+)?(?:nos\s+)?(?:escribió|mencionó|indicó|comentó|dijo|pagó|abonó|compró|pidió)
    | (?:usted\s+)?ha\s+(?:escrito|mencionado|indicado|comentado|pagado|abonado|comprado
        |pedido)
    | (?:se\s+)?le\s+(?:cobraron|cobramos|cargaron)
    | como\s+(?:nos\s+)?(?:indica|indicó|menciona|mencionó|escribe|escribió|dice|dijo)
    | según\s+su | su\s+(?:pedido|factura|pago|compra|suscripción|cargo|mensaje|correo|reserva)
    # it
    | (?:lei\s+)?(?:ci\s+)?(?:ha|aveva)\s+(?:scritto|menzionato|indicato|segnalato|detto
        |pagato|versato|ordinato|acquistato|ricevuto)
    | (?:ci\s+)?(?:scrive|scriveva|indica|menziona|segnala)
    | come\s+(?:ci\s+)?(?:indica|ha\s+indicato|scrive|ha\s+scritto|menziona)
    | secondo\s+(?:il\s+suo|la\s+sua) | (?:il\s+suo|la\s+sua|il\s+tuo|la\s+tua|suo|sua)\s+
        (?:ordine|fattura|pagamento|acquisto|abbonamento|addebito|messaggio|e-?mail|prenotazione)
    # nl
    | (?:u|je|jij)\s+(?:schreef|schrijft|noemde|noemt|meldde|meldt|vermeldde|gaf\s+aan
        |betaalde|bestelde|kocht)
    | (?:u|je|jij)\s+(?:heeft|hebt|had)\b[^!?\n]{0,80}?\b(?:geschreven|gemeld|vermeld|genoemd
        |aangegeven|betaald|besteld|gekocht|overgemaakt|ontvangen)
    | zoals\s+(?:u|je)\s+(?:schrijft|schreef|aangeeft|aangaf|meldt|meldde)
    | volgens\s+uw | (?:uw|je|jouw)\s+(?:bestelling|factuur|betaling|aankoop|abonnement
        |bericht|e-?mail|boeking)
    # pt
    | (?:você\s+|o\s+senhor\s+|a\s+senhora\s+)?(?:nos\s+)?(?:escreveu|mencionou|indicou|disse
        |pagou|comprou|encomendou|pediu)
    | foi\s+cobrad[oa]
    | como\s+(?:nos\s+)?(?:indica|indicou|escreve|escreveu|menciona|mencionou)
    | (?:segundo|de\s+acordo\s+com)\s+(?:o\s+seu|a\s+sua)
    | (?:o\s+seu|a\s+sua|seu|sua)\s+(?:pedido|pagamento|encomenda|fatura|compra|assinatura
        |mensagem|e-?mail|reserva)
    )""",
    re.IGNORECASE | re.VERBOSE,
)

# --- what commits us to money -------------------------------------------------------------
# Future and modal verbs, approvals and money on its way: any of these next to an amount turns
# a report into a commitment ("you paid €5,000, which will be refunded").
_PENDING = re.compile(
    r"""\b(?:
    will|shall|going\s+to|gonna|can|could|would|may|might|about\s+to|approved|authori[sz]ed
    | arranged|scheduled|processed|issued|on\s+(?:its|the)\s+way|underway|due\s+to\s+you|owed
    | entitled|eligible|guarantee\w*|promise\w*
    | werden|wird|werde|wirst|werdet|würde\w*|können|kann|könnten|soll\w*|genehmigt|bewilligt
    | veranlasst|angewiesen|freigegeben|unterwegs|zusteh\w*|anspruch
    | sera|seront|serez|serai|allons|allez|va|vont|pouvons|pourrons|pourrait|pourrez|approuvée?s?
    | validée?s?|accordée?s?|en\s+cours|droit\s+à
    | será|serán|vamos\s+a|va\s+a|van\s+a|podemos|podrá|podríamos|aprobad[oa]s?
    | autorizad[oa]s?|en\s+camino|tiene\s+derecho
    | sarà|saranno|sarete|stiamo\s+per|possiamo|potremo|potrà|approvat[oaie]|autorizzat[oaie]
    | in\s+arrivo|ha\s+diritto
    | zal|zullen|zult|zou|zouden|gaan|gaat|kunnen|goedgekeurd|toegekend|onderweg|recht\s+op
    | serão|vamos|vai|vão|poderá|aprovad[oa]s?|a\s+caminho|tem\s+direito
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)
# Where money goes: the customer's account, card or IBAN, or straight to them.
_DESTINATION = re.compile(
    r"""\b(?:
    (?:into|to|in|on|onto)\s+your\s+(?:\w+\s+)?(?:account|card|iban|bank|wallet|balance|paypal)
    | to\s+you | you\s+back | back\s+to\s+you
    | (?:ihr|ihre|ihrem|ihren|ihrer|dein\w*)\s+(?:\w+\s+)?(?:konto|karte|kreditkarte|iban
        |bankkonto|guthaben) | ihnen
    | (?:votre|ton|sur\s+votre)\s+(?:\w+\s+)?(?:compte|carte|iban|rib)
    | (?:su|tu|en\s+su)\s+(?:\w+\s+)?(?:cuenta|tarjeta|iban)
    | (?:suo|sua|tuo|tua)\s+(?:\w+\s+)?(?:conto|carta|iban)
    | (?:uw|je|jouw|op\s+uw)\s+(?:\w+\s+)?(?:rekening|kaart|iban|bankrekening)
    | (?:sua|seu|tua|teu|na\s+sua)\s+(?:\w+\s+)?(?:conta|cartão|iban)
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)
# The customer receiving or getting something, in any tense.
_RECEIVE = re.compile(
    r"""\b(?:
    you(?:'ll|\s+will|\s+shall|\s+are\s+going\s+to)?\s+(?:receive|get|see|be\s+(?:paid
        |refunded|credited|reimbursed|compensated))|you\s+are\s+getting|you'?re\s+getting
    | (?:erhalten|bekommen)\s+sie|sie\s+(?:erhalten|bekommen)
    | vous\s+(?:recevrez|allez\s+recevoir|recevez|obtiendrez|serez\s+(?:remboursée?s?
        |créditée?s?|payée?s?|indemnisée?s?))
    | recibir\w*|obtendrá | ricever\w*|riceve|otterrà
    | (?:u|je)\s+(?:ontvangt|krijgt)|(?:ontvangt|krijgt)\s+u|krijg\s+je|ontvang\s+je
    | receber\w*|recebe|obterá
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)
# Verbs (stems) that pay money out, in the seven languages: what "it" in "we will refund it"
# is about, so they are looked for in the whole paragraph of a reported amount.
_PAYOUT = (
    r"pay|paid|refund|reimburs|credit|transfer|wire|wiring|compensat|remit"
    r"|return(?:ed|ing)?\s+(?:the|your)\s+(?:money|amount|sum)"
    r"|erstatt|rückerstatt|gutschr|gutgeschr|überweis|überwies|vergüt|entschädig|auszahl"
    r"|ausgezahlt|zurückzahl|zurückgezahlt|zurücküberw"
    r"|rembours|versé|verser|verserons|versera|virement|virer|viré|virons|virera|paier|paie"
    r"|indemnis|compens|crédit"
    r"|reembols|devolv|devuelt|abon[aoe]|abonar|transfier|transferi|ingres|pagar|pagamos"
    r"|pagado|pagaremos|pagará"
    r"|rimbors|accredit|bonific|trasferi|restitu|pagher|paghiamo|pagato|versat|versamento"
    r"|betaal|betaald|terugbetal|terugbetaald|overmak|overgemaakt|stort|gestort|vergoed"
    r"|crediteer|gecrediteerd"
    r"|devolvid|creditad|creditar|depositad|depositar|transferid|transferir|pagaremos"
)
_PAYOUT_VERB = re.compile(rf"\b(?:{_PAYOUT})\w*", re.IGNORECASE)
# The wider set that also moves money towards someone ("send you", "deposit").
_MONEY_VERB = re.compile(
    rf"\b(?:{_PAYOUT}|send|sent|deposit|zahl|bezahl|send|schick|envo|envoi|enviar|envia"
    r"|enviamos|enviado|enviaremos|envió|inviare|inviato|invia|invieremo|inviamo|stuur"
    r"|gestuurd|zend|verstuur|enviaremos)\w*",
    re.IGNORECASE,
)
# Us: the company as the one who acts. Pro-drop languages mark it on the verb (-amos,
# -emos, -iamo) or with the auxiliary ("hemos", "abbiamo", "temos").
_US = re.compile(
    r"""\b(?:
    we|we'\w+|us|our|ours|i|i'\w+|me|my
    | wir|uns|unser\w*|ich
    | nous|notre|nos|je|j'
    | nosotros|nuestr\w+|hemos|\w+(?:amos|emos|imos)
    | noi|nostr\w+|abbiamo|\w+iamo|\w+remo
    | wij|ons|onze|ik|hebben\s+we
    | nós|noss\w+|temos
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)

# --- amounts -------------------------------------------------------------------------------
# A sentence ends at . ! ? before a space or the end; "5.000,00" is not an end.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
_PARAGRAPH = re.compile(r"\n\s*\n")
_CURRENCY = (
    r"(?:[€$£¥₹]|\b(?:eur|euros?|usd|dollars?|gbp|pounds?|chf|francs?|franken|reais|real"
    r"|libras?|sterlin[ea]|sek|nok|dkk|pln|kronor|kroner)\b)"
)
# "€5k", "5 Tsd. €", "5 mil euros": the number is multiplied out.
_MAGNITUDE = {"k": 1_000, "tsd": 1_000, "tausend": 1_000, "thousand": 1_000, "mil": 1_000,
              "mille": 1_000, "mila": 1_000, "duizend": 1_000, "m": 1_000_000,
              "mio": 1_000_000, "mn": 1_000_000, "million": 1_000_000,
              "millions": 1_000_000, "millionen": 1_000_000, "millón": 1_000_000,
              "millones": 1_000_000, "milione": 1_000_000, "milioni": 1_000_000,
              "miljoen": 1_000_000, "milhão": 1_000_000, "milhões": 1_000_000}  # fmt: skip
_SCALED = re.compile(
    rf"(?<![\w.,])(\d{{1,6}}(?:[.,]\d{{1,3}})?)\s?({'|'.join(_MAGNITUDE)})\.?(?!\w)",
    re.IGNORECASE,
)
# An amount written out ("five thousand euros", "cinq mille euros"): its size is unknown.
_WORDS_MAGNITUDE = re.compile(
    r"\b(?:thousand|tausend|mille|mil|mila|duizend|million\w*|millón|millones|milion\w*"
    r"|miljoen\w*|milh(?:ão|ões)|\w+tausend|\w+duizend)\b",
    re.IGNORECASE,
)
_CURRENCY_RE = re.compile(_CURRENCY, re.IGNORECASE)
# A cheap first look: a paragraph without a digit or a written-out thousand has no amount.
_MAYBE_AMOUNT = re.compile(r"\d|thousand|tausend|mil|duizend", re.IGNORECASE)
# A bare number right after (or before) a money verb: "we will transfer 5000 to you".
_BARE = re.compile(r"(?<![\w.,#/-])\d{1,3}(?:[.,'\u00a0 ]\d{3})+(?:[.,]\d{1,2})?(?![\w.,]\d)"
                   r"|(?<![\w.,#/-])\d{3,9}(?:[.,]\d{1,2})?(?![\w/-]|[.,]\d)")
_IDENTIFIER_BEFORE = re.compile(
    r"(?:#|\b(?:no|nr|n[º°o]|number|nummer|numéro|número|numero|order|orders|bestellung"
    r"|auftrag|commande|pedido|ordine|bestelling|encomenda|invoice|rechnung|facture|factura"
    r"|fattura|factuur|fatura|ticket|case|ref|reference|account|konto|compte|cuenta|conto"
    r"|rekening|conta|year|jahr|année|año|anno|jaar|ano)\.?)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class PromisedAmount:
    """An amount above the limit that the reply commits us to, and the sentence it is in."""

    raw: str  # as written in the reply
    amount: Decimal | None  # None when written out in words: its size is not known
    sentence: str


def promised_amounts(
    body: str, limit: Decimal, trusted: tuple[str, ...] = (), ignore: frozenset[str] = frozenset()
) -> list[PromisedAmount]:
    """Every amount above `limit` in `body` that is not merely a report of the customer's
    own words; sentences quoted verbatim from `trusted` texts (the knowledge-base passages)
    and numbers in `ignore` (identifiers extracted from the email) are left out."""
    found: list[PromisedAmount] = []
    trusted_text = [_flat(t) for t in trusted]
    trusted_sentences = [_flat(s) for t in trusted for s in _SENTENCE_END.split(t)
                         if len(s.strip()) >= 20]
    for paragraph in _PARAGRAPH.split(body):
        if not _MAYBE_AMOUNT.search(paragraph):
            continue  # most paragraphs of most replies name no amount at all
        sentences = [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]
        amounts = [list(_large_amounts(s, limit, ignore)) for s in sentences]
        if not any(amounts):
            continue
        paragraph_commits = any(_PAYOUT_VERB.search(s) and _commits(s) for s in sentences)
        for sentence, large in zip(sentences, amounts, strict=True):
            if not large:
                continue
            commits = _commits(sentence)
            flat = _flat(sentence)
            if any(flat in text for text in trusted_text):
                continue  # our own policy text, quoted as it stands (or cut short)
            # An amount inside a policy sentence quoted within ours is the policy's.
            large = [(raw, amount) for raw, amount in large
                     if not any(raw.casefold() in t and t in flat for t in trusted_sentences)]
            reported = _ATTRIBUTION.search(sentence) is not None
            if not large or reported and not commits and not paragraph_commits:
                continue
            found.extend(PromisedAmount(raw, amount, sentence) for raw, amount in large)
    return found


def _flat(text: str) -> str:
    return " ".join(text.split()).casefold()


def _commits(sentence: str) -> bool:
    """Whether a sentence commits someone to a payment (or reads like it might)."""
    # The customer's own verbs ("you paid") say nothing about what we do.
    sentence = _ATTRIBUTION.sub(" ", sentence)
    if _PENDING.search(sentence) or _DESTINATION.search(sentence) or _RECEIVE.search(sentence):
        return True
    return bool(_US.search(sentence) and _MONEY_VERB.search(sentence))


def _large_amounts(
    sentence: str, limit: Decimal, ignore: frozenset[str]
) -> Iterator[tuple[str, Decimal | None]]:
    """(as written, value) for each amount above `limit`: with a currency, scaled ("€5k"),
    written out with a currency word, or a bare number in a sentence that moves money."""
    spans: list[tuple[int, int]] = []
    for c in find_money(sentence):
        if c.problem is not None or not isinstance(c.value, tuple):
            continue
        value = _decimal(c.value[0])
        spans.append((c.start, c.end))
        if value is not None and value > limit:
            yield sentence[c.start:c.end], value
    currency = _CURRENCY_RE.search(sentence) is not None
    money_verb = _MONEY_VERB.search(sentence) is not None
    for m in _SCALED.finditer(sentence):
        number = _decimal(m.group(1).replace(",", "."))
        if number is None or not (currency or money_verb):
            continue
        if number * _MAGNITUDE[m.group(2).lower()] > limit:
            yield m.group(), number * _MAGNITUDE[m.group(2).lower()]
            spans.append(m.span())
    if currency and _WORDS_MAGNITUDE.search(sentence) and not _SCALED.search(sentence):
        yield _WORDS_MAGNITUDE.search(sentence).group(), None  # type: ignore[union-attr]
    if not money_verb:
        return
    for m in _BARE.finditer(sentence):
        if any(s <= m.start() < e for s, e in spans) or m.group() in ignore:
            continue
        if _IDENTIFIER_BEFORE.search(sentence[:m.start()]):
            continue
        value = _decimal(re.sub(r"[.,'\u00a0 ](?=\d{3}\b)", "", m.group()).replace(",", "."))
        if value is not None and value > limit and not _year(m.group()):
            yield m.group(), value


def _year(number: str) -> bool:
    return number.isdigit() and len(number) == 4 and 1900 <= int(number) <= 2100


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except InvalidOperation:
        return None
