"""Score an extractor against a labelled set: precision and recall per field and overall.

A labelled record is `{"text", "date"?, "intent"?, "gold": {field: [value, ...]},
"rejected"?: [field, ...]}`; money is written "142.50 EUR", dates ISO, cards "**** 4242".
Each distinct (field, value) of a record counts once, however often it occurs in the text.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailbot.fields.extract import FieldExtractor, RuleExtractor
from mailbot.fields.result import Extraction, FieldValue
from mailbot.fields.schema import FieldSchema, build_schema


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One value the extractor found but the labels lack (fp) or the reverse (fn)."""

    record: str
    kind: str  # "fp" or "fn"
    field: str
    value: str


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Counts per field; precision/recall derived from them."""

    tp: Counter[str] = field(default_factory=Counter)
    fp: Counter[str] = field(default_factory=Counter)
    fn: Counter[str] = field(default_factory=Counter)
    rejected_ok: int = 0
    rejected_expected: int = 0
    records: int = 0
    mismatches: tuple[Mismatch, ...] = ()

    def precision(self, name: str | None = None) -> float:
        """Share of found values that are labelled (1.0 when nothing was found)."""
        tp, fp = self._counts(name)[:2]
        return tp / (tp + fp) if tp + fp else 1.0

    def recall(self, name: str | None = None) -> float:
        """Share of labelled values that were found (1.0 when nothing was labelled)."""
        tp, _, fn = self._counts(name)
        return tp / (tp + fn) if tp + fn else 1.0

    def _counts(self, name: str | None) -> tuple[int, int, int]:
        if name is None:
            return sum(self.tp.values()), sum(self.fp.values()), sum(self.fn.values())
        return self.tp[name], self.fp[name], self.fn[name]

    def to_json(self) -> dict[str, Any]:
        """Per-field and overall figures, as the bench script prints them."""
        names = sorted(set(self.tp) | set(self.fp) | set(self.fn))
        return {
            "records": self.records,
            "overall": self._row(None),
            "fields": {n: self._row(n) for n in names},
            "rejected": {"expected": self.rejected_expected, "found": self.rejected_ok},
        }

    def _row(self, name: str | None) -> dict[str, Any]:
        tp, fp, fn = self._counts(name)
        return {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": round(self.precision(name), 4),
            "recall": round(self.recall(name), 4),
        }


def normalise(name: str, value: Any) -> str:
    """The comparison key of a value (gold or found)."""
    if isinstance(value, dict):  # money as JSON
        value = f"{value['amount']} {value['currency']}"
    elif isinstance(value, tuple):
        value = f"{value[0]} {value[1]}"
    text = " ".join(str(value).split())
    if name == "address":
        return re.sub(r"[\W_]+", "", text.casefold())
    if name == "email":
        return text.lower()
    return text


def _found(extraction: Extraction) -> set[tuple[str, str]]:
    out = set()
    for name, values in extraction.fields.items():
        for v in values:
            out.add((name, normalise(name, _scalar(v))))
    return out


def _scalar(v: FieldValue) -> Any:
    return v.value


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a labelled JSON Lines file."""
    from mailbot.jsonlines import split_records

    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for _, line in split_records(text) if line.strip()]


def evaluate(
    records: Iterable[dict[str, Any]],
    schema: FieldSchema | None = None,
    extractor: FieldExtractor | None = None,
) -> QualityReport:
    """Run the extractor over labelled records and count hits, misses and false finds."""
    schema = schema or build_schema()
    extractor = extractor or RuleExtractor()
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    mismatches: list[Mismatch] = []
    rejected_ok = rejected_expected = count = 0
    for record in records:
        count += 1
        reference = (
            datetime.fromisoformat(record["date"]).replace(tzinfo=UTC)
            if record.get("date")
            else None
        )
        extraction = extractor.extract(
            record["text"], schema, intent=record.get("intent"), reference=reference
        )
        gold = {
            (name, normalise(name, value))
            for name, values in record.get("gold", {}).items()
            for value in values
        }
        found = _found(extraction)
        for name, _value in found & gold:
            tp[name] += 1
        for name, value in sorted(found - gold):
            fp[name] += 1
            mismatches.append(Mismatch(record.get("id", str(count)), "fp", name, value))
        for name, value in sorted(gold - found):
            fn[name] += 1
            mismatches.append(Mismatch(record.get("id", str(count)), "fn", name, value))
        expected = set(record.get("rejected", []))
        rejected_expected += len(expected)
        rejected_ok += len(expected & {r.name for r in extraction.rejected})
    return QualityReport(tp, fp, fn, rejected_ok, rejected_expected, count, tuple(mismatches))
