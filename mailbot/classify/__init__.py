"""Classification: intent, priority and sentiment heads on the encoder's embeddings,
language identification, out-of-scope detection and versioned training.

Inference needs only numpy (and fasttext-predict for the language); training also needs
scikit-learn.
"""

from __future__ import annotations

from mailbot.classify.classifier import Classifier, message_text
from mailbot.classify.head import Head, HeadPrediction
from mailbot.classify.result import Classification, LabelScore
from mailbot.classify.store import HeadRecord, HeadStore

__all__ = [
    "Classification",
    "Classifier",
    "Head",
    "HeadPrediction",
    "HeadRecord",
    "HeadStore",
    "LabelScore",
    "message_text",
]
