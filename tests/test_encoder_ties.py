"""Heads belong to the encoder whose embeddings they were trained on, and say so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailbot.classify import Classifier, HeadStore
from mailbot.classify.data import read_labeled_csv
from mailbot.classify.store import train_from_examples
from mailbot.db import Database
from mailbot.errors import ModelError
from tests import test_classify as shared
from tests.test_classify import FAST, banking_subset, write_csv

classify_models_path = shared.classify_models_path


def test_a_head_of_another_encoder_is_refused_with_the_command_to_run(
    encoder: Any, e5_encoder: Any, classify_models_path: Path, tmp_path: Path
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    database.upgrade()
    store = HeadStore(classify_models_path, database)
    texts, labels = banking_subset(4, 12, "train")
    data = write_csv(tmp_path / "banking.csv", texts, labels)
    examples = read_labeled_csv(data)
    english = store.save(train_from_examples("intent", examples, encoder, options=FAST),
                         promote=True, source=str(data))
    assert (english.encoder, english.encoder_version) == (encoder.name, encoder.version)

    # The English head's weights mean nothing on E5's vectors: no silent mix.
    with pytest.raises(ModelError) as caught:
        Classifier(e5_encoder, store)
    message = str(caught.value)
    assert "all-MiniLM-L6-v2" in message and "multilingual-e5-small" in message
    assert f"mailbot train intent --data {data}" in message

    # A head trained for E5 is served to E5; the English one stays with the English encoder.
    multilingual = store.save(train_from_examples("intent", examples, e5_encoder, options=FAST),
                              promote=True, source=str(data))
    assert Classifier(e5_encoder, store).heads["intent"].version == multilingual.version
    assert Classifier(encoder, store).heads["intent"].version == english.version
    result = Classifier(e5_encoder, store).classify("Ich habe meine neue Karte noch nicht")
    assert result.model == "multilingual-e5-small" and result.model_version == e5_encoder.version
