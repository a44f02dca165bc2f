"""Sentence embeddings from a CTranslate2 encoder (BERT-like), pooled like sentence-transformers.

The default encoder is all-MiniLM-L6-v2: mean pooling over the attention mask, then L2
normalisation, exactly what its sentence-transformers pipeline does. The vectors serve the
classification heads, out-of-scope detection and knowledge-base retrieval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
from tokenizers import Tokenizer

from mailbot.engine.manifest import ModelManifest, verify_model_dir
from mailbot.engine.runtime import (
    load_ct2_model,
    resolve_compute_type,
    resolve_device,
    to_float32,
)
from mailbot.errors import ModelError

log = logging.getLogger(__name__)

# A cap on characters fed to the tokenizer, per allowed token: English averages about four
# characters a token, so this never cuts a text the token limit would keep, while a
# multi-megabyte body is not tokenised in full only to be thrown away.
_CHARS_PER_TOKEN_CAP = 32


# Most tokens (rows x padded length) in one forward pass: 16 texts of 128 tokens, 8 of 256.
# Measured on 2 cores with ~180-token emails: 2048 embeds about twice as fast as 4096 (the
# working set stays in cache) and keeps the worker's peak RSS near 180 MB instead of 250+.
_BATCH_TOKENS = 2048


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Unit-length sentence vectors, one row per input text, in input order."""

    vectors: np.ndarray  # float32, shape (n, dim), each row L2-normalised
    truncated: tuple[bool, ...]  # True where the text was cut at max_input_tokens
    token_counts: tuple[int, ...]  # tokens the model saw (special tokens included)

    def __len__(self) -> int:
        return len(self.truncated)


class Encoder:
    """A loaded sentence encoder: tokenizer + CTranslate2 model + pooling."""

    def __init__(
        self,
        model_dir: Path,
        manifest: ModelManifest,
        model: ctranslate2.Encoder,
        *,
        max_input_tokens: int = 256,
        batch_size: int = 32,
    ) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self._model = model
        self.batch_size = batch_size
        limit = max_input_tokens
        if manifest.max_positions and limit > manifest.max_positions:
            log.warning(
                "models.max_input_tokens = %d exceeds what %s accepts; using %d",
                limit,
                model_dir.name,
                manifest.max_positions,
            )
            limit = manifest.max_positions
        self.max_input_tokens = limit
        self._tokenizer = _load_tokenizer(model_dir / manifest.tokenizer, limit)
        self._dim = int(manifest.dim) if manifest.dim else self._probe_dim()

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        intra_threads: int = 0,
        inter_threads: int = 1,
        max_input_tokens: int = 256,
        batch_size: int = 32,
        hint: str = "",
    ) -> Encoder:
        """Verify a model directory and load it (the CTranslate2 model is shared per process)."""
        manifest = verify_model_dir(model_dir, kind="encoder", hint=hint)
        device = resolve_device(device)
        model = load_ct2_model(
            ctranslate2.Encoder,
            model_dir,
            device=device,
            compute_type=resolve_compute_type(device, compute_type),
            intra_threads=intra_threads,
            inter_threads=inter_threads,
        )
        return cls(
            model_dir, manifest, model, max_input_tokens=max_input_tokens, batch_size=batch_size
        )

    def with_max_tokens(self, max_input_tokens: int) -> Encoder:
        """The same loaded model with another input limit (e.g. longer for KB passages)."""
        if max_input_tokens == self.max_input_tokens:
            return self
        return Encoder(self.model_dir, self.manifest, self._model,
                       max_input_tokens=max_input_tokens, batch_size=self.batch_size)

    @property
    def name(self) -> str:
        """The model's directory name, e.g. "all-MiniLM-L6-v2"."""
        return self.model_dir.name

    @property
    def version(self) -> str:
        """A short hash of the weights; changes whenever the model is converted differently."""
        return self.manifest.version

    @property
    def dim(self) -> int:
        """The embedding size (384 for all-MiniLM-L6-v2)."""
        return self._dim

    def embed(self, texts: Sequence[str]) -> Embeddings:
        """Embed texts in batches; rows come back in the order given."""
        started = time.perf_counter()
        count = len(texts)
        if count == 0:
            return Embeddings(np.zeros((0, self._dim), dtype=np.float32), (), ())
        cap = self.max_input_tokens * _CHARS_PER_TOKEN_CAP
        clipped = [text[:cap] for text in texts]
        encodings = self._tokenizer.encode_batch(clipped)
        ids = [enc.ids for enc in encodings]
        truncated = tuple(
            bool(enc.overflowing) or len(text) > cap
            for enc, text in zip(encodings, texts, strict=True)
        )
        vectors = np.empty((count, self._dim), dtype=np.float32)
        # Sorting by length keeps padding low: a batch pads to its longest member.
        order = sorted(range(count), key=lambda i: len(ids[i]))
        for rows in self._batches(order, ids):
            vectors[rows] = self._pool([ids[i] for i in rows])
        log.debug(
            "embedded %d texts in %.1f ms (%d truncated)",
            count,
            (time.perf_counter() - started) * 1000,
            sum(truncated),
        )
        return Embeddings(vectors, truncated, tuple(len(row) for row in ids))

    def _batches(self, order: list[int], ids: list[list[int]]) -> list[list[int]]:
        """Split length-sorted rows into batches of at most batch_size rows and a token budget.

        The budget bounds the attention buffers (rows x heads x length^2), which dominate the
        worker's peak memory once texts reach the 256-token limit.
        """
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            longest = len(ids[i])  # sorted ascending: the newest row is the longest
            if current and (
                len(current) >= self.batch_size or (len(current) + 1) * longest > _BATCH_TOKENS
            ):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _pool(self, batch: list[list[int]]) -> np.ndarray:
        hidden = to_float32(self._model.forward_batch(batch).last_hidden_state)
        lengths = np.array([len(row) for row in batch], dtype=np.float32)
        mask = np.arange(hidden.shape[1])[None, :] < lengths[:, None]
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / lengths[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        # sentence-transformers' Normalize uses the same floor against division by zero.
        return pooled / np.maximum(norms, 1e-12)

    def _probe_dim(self) -> int:
        hidden = self._model.forward_batch([self._tokenizer.encode("probe").ids])
        return int(to_float32(hidden.last_hidden_state).shape[-1])


def _load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ModelError(f"{path}: cannot load the tokenizer ({exc})") from None
    # tokenizer.json may carry padding/truncation from training (128 for MiniLM); replace
    # them with ours. Truncation keeps the special tokens ([CLS] ... [SEP]) at the ends.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer
