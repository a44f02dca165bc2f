"""The retrieve stage: the knowledge-base passages a reply to this message can rest on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailbot.pipeline.runner import StageResult, WorkItem

if TYPE_CHECKING:
    from mailbot.kb.knowledge import KnowledgeBase


class RetrieveStage:
    """Hybrid search of the knowledge base with the email's subject and new text."""

    name = "retrieve"

    def __init__(self, knowledge_base: KnowledgeBase, top_k: int | None = None) -> None:
        self.knowledge_base = knowledge_base
        self.top_k = top_k

    def run(self, item: WorkItem) -> StageResult:
        return self.run_many([item])[0]

    def run_many(self, items: Sequence[WorkItem]) -> list[StageResult]:
        from mailbot.classify import message_text

        queries = [message_text(m.subject, m.new_text or m.text)
                   for m in (item.results["parse"] for item in items)]
        found = self.knowledge_base.search_many(queries, self.top_k)
        return [
            StageResult(
                "ok" if passages else "none", value=tuple(passages),
                details={"passages": [
                    {"id": p.id, "source": p.source, "heading": p.heading_path,
                     "version": p.document_version, "score": round(p.score, 4)}
                    for p in passages
                ]},
            )
            for passages in found
        ]
