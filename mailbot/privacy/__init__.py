"""Pseudonymisation of personal data before a cloud LLM call, and its reversal."""

from mailbot.privacy.pseudonymise import (
    DEFAULT_CATEGORIES,
    PLACEHOLDER,
    Pseudonymiser,
    Redaction,
    category_of,
)

__all__ = ["DEFAULT_CATEGORIES", "PLACEHOLDER", "Pseudonymiser", "Redaction", "category_of"]
