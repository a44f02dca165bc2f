"""Turning texts into token ids for an encoder, with truncation at the input limit.

Two tokenizer files are understood. `tokenizer.json` (the `tokenizers` library) serves
WordPiece and BPE vocabularies such as all-MiniLM-L6-v2's. For a large SentencePiece-unigram
vocabulary the model directory also carries `sentencepiece.model`, the same vocabulary and
normalisation compiled for the `sentencepiece` library, and the manifest names it: measured,
`tokenizers` holds XLM-R's 250,002 pieces in a character trie of about 260 MB, where
sentencepiece's double-array trie needs about 55 MB. Both produce the same ids (a test
compares them); the only difference is that text cannot spell out special tokens (`</s>`)
through sentencepiece, which suits attacker-written mail.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from mailbot.errors import ModelError

SENTENCEPIECE_NAME = "sentencepiece.model"


class TextTokenizer(Protocol):
    """Encodes texts into ids with the model's special tokens, at most `max_tokens` each."""

    max_tokens: int

    def encode_batch(self, texts: Sequence[str]) -> list[tuple[list[int], bool]]:
        """(ids, truncated) per text, in order."""
        ...


class HFTokenizer:
    """A `tokenizers` tokenizer.json; truncation keeps the special tokens at both ends."""

    def __init__(self, path: Path, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for bad files
            raise ModelError(f"{path}: cannot load the tokenizer ({exc})") from None
        # tokenizer.json may carry padding/truncation from training (128 for MiniLM); replace
        # them with ours.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self.max_tokens = max_tokens

    def encode_batch(self, texts: Sequence[str]) -> list[tuple[list[int], bool]]:
        """(ids, truncated) per text."""
        return [(enc.ids, bool(enc.overflowing))
                for enc in self._tokenizer.encode_batch(list(texts))]


class SentencePieceTokenizer:
    """A sentencepiece unigram model laid out in the encoder's own ids, `<s> ... </s>` added."""

    def __init__(self, path: Path, max_tokens: int) -> None:
        self._model = _sentencepiece_processor(path)
        self._bos, self._eos = self._model.bos_id(), self._model.eos_id()
        self._space = self._model.piece_to_id("\u2581")
        if min(self._bos, self._eos, self._space) < 0:
            raise ModelError(f"{path}: the tokenizer lacks <s>, </s> or the ▁ piece")
        self.max_tokens = max_tokens

    def encode_batch(self, texts: Sequence[str]) -> list[tuple[list[int], bool]]:
        """(ids, truncated) per text."""
        room = max(self.max_tokens - 2, 0)
        results = []
        for text, ids in zip(texts, self._model.encode(list(texts)), strict=True):
            # sentencepiece drops trailing whitespace; the tokenizer.json pipeline (and the
            # model's training) kept one "▁" for it.
            if text[-1:].isspace() and text.strip():
                ids.append(self._space)
            results.append(([self._bos, *ids[:room], self._eos], len(ids) > room))
        return results


# One loaded sentencepiece model per file per process: the encoder's copies with other input
# limits (the knowledge base's) share it, since truncation happens here, not inside it.
_PROCESSORS: dict[tuple[str, int], Any] = {}
_PROCESSORS_LOCK = threading.Lock()


def _sentencepiece_processor(path: Path) -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise ModelError(f"{path} needs the sentencepiece package: pip install sentencepiece"
                         ) from None
    try:
        key = (str(path.resolve()), path.stat().st_mtime_ns)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the tokenizer ({exc.strerror})") from None
    with _PROCESSORS_LOCK:
        processor = _PROCESSORS.get(key)
        if processor is None:
            processor = sentencepiece.SentencePieceProcessor()
            try:
                processor.LoadFromFile(str(path))
            except (OSError, RuntimeError) as exc:
                raise ModelError(f"{path}: cannot load the tokenizer ({exc})") from None
            _PROCESSORS[key] = processor
        return processor


def load_tokenizer(model_dir: Path, name: str, max_tokens: int) -> TextTokenizer:
    """The tokenizer file a manifest names, loaded with our truncation."""
    path = model_dir / name
    if name.endswith(".model"):
        return SentencePieceTokenizer(path, max_tokens)
    return HFTokenizer(path, max_tokens)
