"""Intent by the generator: score every allowed label as the prompt's continuation.

The answer is always one of the configured labels, because nothing is generated freely:
each label's log-probability is computed (CTranslate2 score_batch) and the best one wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from mailbot.classify.head import softmax
from mailbot.classify.result import LabelScore
from mailbot.classify.store import label_phrase

# Enough of a message to tell its intent, and a prompt that stays short on a small model.
MAX_PROMPT_CHARS = 2000


class ChoiceScorer(Protocol):
    """What this needs from the engine's `Generator`."""

    def score_choices(
        self, prompt: str, choices: Sequence[str], *, include_end: bool = False
    ) -> list[float]: ...


def intent_prompt(text: str, labels: Sequence[str]) -> str:
    """The classification prompt; labels are listed so an instruction-tuned model sees them."""
    options = ", ".join(label_phrase(label) for label in labels)
    return (
        "Classify the customer support email by its intent.\n"
        f"Intents: {options}.\n\n"
        f"Email:\n{text[:MAX_PROMPT_CHARS].strip()}\n\n"
        "Intent:"
    )


def generator_intent(generator: ChoiceScorer, text: str, labels: Sequence[str]) -> LabelScore:
    """The most likely label, with confidences normalised over the allowed labels."""
    if not labels:
        raise ValueError("no labels to choose from")
    choices = [" " + label_phrase(label) for label in labels]
    # Counting the end token keeps a label that is a prefix of another from winning by default.
    scores = np.array(
        generator.score_choices(intent_prompt(text, labels), choices, include_end=True)
    )
    probs = softmax(scores[None, :])[0]
    order = np.argsort(-probs)
    second = int(order[1]) if len(order) > 1 else None
    return LabelScore(
        label=labels[int(order[0])],
        confidence=round(float(probs[order[0]]), 4),
        runner_up=labels[second] if second is not None else None,
        runner_up_confidence=round(float(probs[second]), 4) if second is not None else 0.0,
    )
