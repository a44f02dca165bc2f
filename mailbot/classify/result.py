"""What classification hands to the next stages."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LabelScore:
    """The chosen label with its calibrated probability, and the runner-up."""

    label: str
    confidence: float
    runner_up: str | None
    runner_up_confidence: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the four fields."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Classification:
    """Intent, priority, sentiment and language of one message, and where they came from."""

    intent: LabelScore
    priority: LabelScore
    sentiment: LabelScore
    language: str  # ISO 639-1 code, "und" when the text is too short to tell
    out_of_scope_score: float  # 0..1; higher = less like any known intent
    out_of_scope: bool  # the score passed the configured threshold
    model: str  # the encoder (or generator, for intent by generator) name
    model_version: str
    head_version: str  # the intent head's version ("generator" when the generator chose)
    truncated: bool  # the encoder saw only the start of the text
    head_versions: tuple[tuple[str, str], ...] = ()  # (head name, version) for every head
    # The intent confidence threshold recalibrated with the intent head (`mailbot learn`);
    # None: the router's route.min_intent_confidence applies.
    min_confidence: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; nested label scores become dicts."""
        data = asdict(self)
        data["head_versions"] = dict(self.head_versions)
        return data
