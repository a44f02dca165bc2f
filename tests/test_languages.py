"""Mail in every language customers write in gets a reply in that language.

The real pipeline (parse, the real encoder and seed heads, extract, compose) on messages from
tests/data/languages; the greeting, the body and the signature must all be in the customer's
language, also when the customer quotes our English reply under a short answer.
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailbot.config import KnowledgeBaseSettings, config_from_dict
from mailbot.db.session import Database
from mailbot.kb import KnowledgeBase
from mailbot.pipeline.runner import dry_run
from mailbot.pipeline.wiring import build_stages

DATA = Path(__file__).parent / "data"
LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt")
# What a customer sees first and last in a reply in each language (the default config).
GREETINGS = {"en": "Hello Ana,", "de": "Guten Tag Ana,", "fr": "Bonjour Ana,", "es": "Hola Ana:",
             "it": "Gentile Ana,", "nl": "Beste Ana,", "pt": "Olá Ana,"}
SIGN_OFFS = {"en": "Kind regards,\nCustomer Support",
             "de": "Mit freundlichen Grüßen\nIhr Kundenservice",
             "fr": "Cordialement,\nLe service client", "es": "Un saludo,\nAtención al cliente",
             "it": "Cordiali saluti,\nIl servizio clienti",
             "nl": "Met vriendelijke groet,\nDe klantenservice",
             "pt": "Com os melhores cumprimentos,\nO apoio ao cliente"}
ENGLISH_WORDS = ("Thank you", "Kind regards", "order number", "Hello")


def sample_message(language: str, intent: str) -> dict[str, str]:
    """The first test-set message of a language with that intent."""
    path = DATA / "languages" / f"{language}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return next(r for r in rows if r["intent"] == intent)


def email(subject: str, body: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ana Sousa <ana.sousa@example.org>"
    msg["To"] = "Support <support@shop.example.com>"
    msg["Subject"] = subject
    msg["Message-ID"] = "<c1@example.org>"
    for key, value in headers.items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes()


@pytest.fixture(scope="module")
def stages(encoder_dir: Path) -> Any:
    # Routing off: every classified message gets its draft (no cloud LLM here).
    config = config_from_dict({"models": {"dir": str(encoder_dir.parent)},
                               "route": {"enabled": False}})
    return build_stages(config)


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_customer_gets_the_reply_in_their_own_language(stages: Any, language: str) -> None:
    found = sample_message(language, "order_status")
    result = dry_run(stages, email(found["subject"], found["body"]))
    draft = result.case.draft
    assert draft is not None and draft.language == language
    assert draft.template.endswith(f".{language}.txt.j2") and not draft.needs_review
    assert draft.body.startswith(GREETINGS[language])
    assert draft.body.rstrip().endswith(SIGN_OFFS[language])
    if language != "en":
        assert not any(words in draft.body for words in ENGLISH_WORDS), draft.body


@pytest.mark.parametrize("language", ["de", "fr", "es", "it", "nl", "pt"])
def test_a_missing_order_number_is_asked_for_in_the_customer_language(
    stages: Any, language: str
) -> None:
    found = sample_message(language, "order_status")
    body = found["body"].replace("A", "").split("\n")[0]  # no order number in the mail
    asks = {"de": "Ihre Bestellnummer", "fr": "votre numéro de commande",
            "es": "su número de pedido", "it": "il numero d'ordine",
            "nl": "uw bestelnummer", "pt": "o número da sua encomenda"}
    draft = dry_run(stages, email(found["subject"].replace("A", ""), body)).case.draft
    assert draft is not None and draft.language == language
    if "order_id" in draft.missing:
        assert asks[language] in draft.body


QUOTED_ENGLISH = """Hello Ana,

Thank you for getting in touch about order A10234. We are checking the status of order
A10234 with our warehouse and the carrier now, and we will send you the current tracking
details and expected delivery date as soon as we have them.

Kind regards,
Customer Support"""


@pytest.mark.parametrize(("language", "answer", "header"), [
    ("es", "Sigo sin recibir nada.",
     "El mié, 2 dic 2026 a las 10:14, Customer Support <support@shop.example.com> escribió:"),
    ("de", "Danke, aber bei mir ist noch immer nichts angekommen.",
     "Am Mi., 2. Dez. 2026 um 10:14 Uhr schrieb Customer Support <support@shop.example.com>:"),
    ("pt", "Ainda não recebi nada, já passaram duas semanas.",
     "Em qua., 2 de dez. de 2026 às 10:14, Customer Support <support@shop.example.com> "
     "escreveu:"),
])  # fmt: skip
def test_quoted_english_history_does_not_flip_the_reply_language(
    stages: Any, language: str, answer: str, header: str
) -> None:
    quoted = "\n".join(f"> {line}" if line else ">" for line in QUOTED_ENGLISH.splitlines())
    raw = email("Re: Your order A10234", f"{answer}\n\n{header}\n{quoted}\n",
                **{"In-Reply-To": "<r1@shop.example.com>"})
    result = dry_run(stages, raw)
    assert result.case.classification is not None
    assert result.case.classification.language == language
    draft = result.case.draft
    assert draft is not None and draft.language == language
    assert draft.body.startswith(GREETINGS[language])
    assert draft.body.rstrip().endswith(SIGN_OFFS[language])


def test_configured_signatures_close_the_replies_of_their_language(encoder_dir: Path) -> None:
    config = config_from_dict({
        "models": {"dir": str(encoder_dir.parent)}, "route": {"enabled": False},
        "drafts": {"signature": "Best wishes,\nNorthwind",
                   "signatures": {"es": "Saludos,\nNorthwind"}},
    })  # fmt: skip
    stages = build_stages(config)
    for language, sign_off in (("es", "Saludos,\nNorthwind"), ("en", "Best wishes,\nNorthwind"),
                               ("fr", SIGN_OFFS["fr"])):
        found = sample_message(language, "refund")
        draft = dry_run(stages, email(found["subject"], found["body"])).case.draft
        assert draft is not None and draft.language == language
        assert draft.body.rstrip().endswith(sign_off)


# -- the knowledge base in the customer's language ------------------------------------------


@pytest.fixture(scope="module")
def multilingual_kb(tmp_path_factory: pytest.TempPathFactory, encoder: object) -> KnowledgeBase:
    """The shipped English sample knowledge base plus German and Spanish documents."""
    from mailbot.resources import data_dir

    path = tmp_path_factory.mktemp("kb-languages")
    database = Database(f"sqlite:///{path / 'kb.db'}")
    database.upgrade()
    kb = KnowledgeBase(database, KnowledgeBaseSettings(refresh_seconds=0), encoder)
    kb.add([data_dir() / "kb", DATA / "kb-languages"])
    return kb


def test_a_german_question_with_other_word_forms_finds_the_german_passage(
    multilingual_kb: KnowledgeBase,
) -> None:
    # The passage says "Rücksendung", "erstatten", "Werktagen", "Kreditkarte"; the question
    # uses other forms of them.
    question = "Nach wie vielen Werktagen kommen Erstattungen für Rücksendungen auf Kreditkarten?"
    [top, *_] = multilingual_kb.search(question, 3)
    assert top.source.endswith("ruecksendung.de.md")
    assert top.heading_path.endswith("Erstattung nach der Rücksendung")
    [keyword_top, *_] = multilingual_kb.search(question, 3, mode="keyword")
    assert keyword_top.heading_path.endswith("Erstattung nach der Rücksendung")


def test_a_spanish_question_finds_the_spanish_passage(multilingual_kb: KnowledgeBase) -> None:
    [top, *_] = multilingual_kb.search("¿Puedo cambiar las direcciones de mis pedidos?", 3)
    assert top.source.endswith("envios.es.md")
    assert "dirección" in top.heading_path.lower()


def test_english_questions_still_find_the_english_policy(multilingual_kb: KnowledgeBase) -> None:
    [top, *_] = multilingual_kb.search("how long do I have to send something back", 3)
    assert top.source.endswith(".md") and "de.md" not in top.source
    assert "30 days" in top.text
