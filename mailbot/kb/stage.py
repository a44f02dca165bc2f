"""The retrieve stage: the knowledge-base passages a reply to this message can rest on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailbot.pipeline.case import Case, Step

if TYPE_CHECKING:
    from mailbot.kb.knowledge import KnowledgeBase


class RetrieveStage:
    """Hybrid search of the knowledge base with the email's subject and new text."""

    name = "retrieve"

    def __init__(self, knowledge_base: KnowledgeBase, top_k: int | None = None) -> None:
        self.knowledge_base = knowledge_base
        self.top_k = top_k

    def run(self, case: Case) -> Step:
        return self.run_many([case])[0]

    def run_many(self, cases: Sequence[Case]) -> list[Step]:
        queries = [case.parsed().customer_text for case in cases]
        found = self.knowledge_base.search_many(queries, self.top_k)
        return [
            Step(
                case.with_(passages=tuple(passages)), "ok" if passages else "none",
                details={"passages": [
                    {"id": p.id, "source": p.source, "heading": p.heading_path,
                     "version": p.document_version, "score": round(p.score, 4)}
                    for p in passages
                ]},
            )
            for case, passages in zip(cases, found, strict=True)
        ]
