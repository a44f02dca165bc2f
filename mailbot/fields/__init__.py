"""Field extraction: order numbers, amounts, dates, contacts and names found in an email.

Deterministic recognisers (patterns with check digits, `dateparser`, `price-parser`,
`phonenumbers`) do the work; `FieldExtractor` is the seam for a generator-backed extractor.
"""

from mailbot.fields.extract import FieldExtractor, RuleExtractor, extract_message
from mailbot.fields.result import Extraction, FieldValue, Rejection
from mailbot.fields.schema import FieldSchema, build_schema, default_specs

__all__ = [
    "Extraction",
    "FieldExtractor",
    "FieldSchema",
    "FieldValue",
    "Rejection",
    "RuleExtractor",
    "build_schema",
    "default_specs",
    "extract_message",
]
