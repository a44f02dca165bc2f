"""The knowledge base: the company's own documents, split into passages, embedded and searched.

`KnowledgeBase.add` reads Markdown, plain text, HTML and PDF files into passages that keep
their heading path, embeds them with the configured encoder and stores them in the database;
`KnowledgeBase.search` ranks them for a question by vector similarity and BM25 keywords,
fused by reciprocal rank (see `mailbot.kb.index`).
"""

from __future__ import annotations

from mailbot.kb.errors import (
    DocumentMissing,
    KnowledgeBaseError,
    UnreadableDocument,
    UnsupportedDocument,
)
from mailbot.kb.index import SEARCH_MODES, Passage, SearchMode
from mailbot.kb.knowledge import AddResult, KnowledgeBase
from mailbot.kb.store import DocumentInfo

__all__ = [
    "SEARCH_MODES",
    "AddResult",
    "DocumentInfo",
    "DocumentMissing",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "Passage",
    "SearchMode",
    "UnreadableDocument",
    "UnsupportedDocument",
]
