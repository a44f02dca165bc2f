"""The classify stage: intent, priority, sentiment, language and the out-of-scope score."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailbot.audit.cost import cpu_cost
from mailbot.classify.language import message_language
from mailbot.db.models import MessageStatus
from mailbot.pipeline.case import Case, Step

if TYPE_CHECKING:
    from mailbot.classify.classifier import Classifier


class ClassifyStage:
    """Classifies a batch of messages on the small model in one inference batch."""

    name = "classify"

    def __init__(self, classifier: Classifier, cpu_hour_price: float = 0.0) -> None:
        self.classifier = classifier
        self.cpu_hour_price = cpu_hour_price

    def run(self, case: Case) -> Step:
        return self.run_many([case])[0]

    def run_many(self, cases: Sequence[Case]) -> list[Step]:
        self.classifier.refresh()  # picks up a newly promoted head without a restart
        texts = [case.parsed().customer_text for case in cases]
        started = time.process_time()
        results = self.classifier.classify_many(texts)
        cpu_seconds = (time.process_time() - started) / max(1, len(cases))
        cost = cpu_cost(cpu_seconds, self.cpu_hour_price)
        steps = []
        languages = self.classifier.settings.languages
        for case, classification in zip(cases, results, strict=True):
            # The reply's language is the customer's new text's, never the quoted history's
            # or that of the subject our own earlier reply gave the thread.
            classification = dataclasses.replace(
                classification, language=message_language(case.parsed(), languages))
            details: dict[str, Any] = classification.to_json()
            details["cpu_seconds"] = round(cpu_seconds, 6)
            steps.append(Step(
                case.with_(classification=classification), "ok",
                status=MessageStatus.CLASSIFIED, details=details, model=classification.model,
                model_version=classification.model_version, cost=cost,
            ))
        return steps
