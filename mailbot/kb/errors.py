"""What can go wrong with the knowledge base, each with the exit code the CLI gives it."""

from __future__ import annotations

from mailbot.errors import ExitCode, PermanentError


class KnowledgeBaseError(PermanentError):
    """Base class of the knowledge base's own errors."""


class DocumentMissing(KnowledgeBaseError):
    """A path given to `kb add` does not exist, or `kb remove` names no stored document."""

    exit_code = ExitCode.NO_INPUT


class UnsupportedDocument(KnowledgeBaseError):
    """A file is of a type the knowledge base cannot read (by its extension)."""

    exit_code = ExitCode.USAGE


class UnreadableDocument(KnowledgeBaseError):
    """A file of a supported type could not be read or gave no text."""

    exit_code = ExitCode.DATA
