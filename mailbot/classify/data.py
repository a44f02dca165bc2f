"""Labelled examples from CSV files, with errors a user can act on."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from mailbot.classify.train import TrainingDataError
from mailbot.errors import ExitCode


class TrainingFileMissing(TrainingDataError):
    """A training or test file does not exist or cannot be read."""

    exit_code = ExitCode.NO_INPUT


@dataclass(frozen=True, slots=True)
class LabeledExamples:
    """Texts and their labels, in file order."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


def read_labeled_csv(
    path: Path | str, text_col: str = "text", label_col: str = "label"
) -> LabeledExamples:
    """Read a CSV with a header row; rows with an empty text or label are skipped."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise TrainingFileMissing(f"{path}: no such file") from None
    except OSError as exc:
        raise TrainingFileMissing(f"{path}: cannot read ({exc.strerror})") from None
    texts: list[str] = []
    labels: list[str] = []
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = reader.fieldnames
            if not header:
                raise TrainingDataError(
                    f"{path}: the file is empty; expected a header row with "
                    f"{text_col!r} and {label_col!r} columns"
                )
            missing = [col for col in (text_col, label_col) if col not in header]
            if missing:
                raise TrainingDataError(
                    f"{path}: no column named {', '.join(map(repr, missing))}; the header has "
                    f"{', '.join(map(repr, header))} (choose with --text-col / --label-col)"
                )
            for row in reader:
                text = (row.get(text_col) or "").strip()
                label = (row.get(label_col) or "").strip()
                if text and label:
                    texts.append(text)
                    labels.append(label)
        except UnicodeDecodeError:
            raise TrainingDataError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
        except csv.Error as exc:
            raise TrainingDataError(f"{path}: not valid CSV: {exc}") from None
    if not texts:
        raise TrainingDataError(f"{path}: no rows with both a {text_col!r} and a {label_col!r}")
    return LabeledExamples(tuple(texts), tuple(labels), str(path))
