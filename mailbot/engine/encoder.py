"""Sentence embeddings from a CTranslate2 encoder (BERT-like), pooled like sentence-transformers.

Both encoders mailbot prepares, all-MiniLM-L6-v2 (the default) and multilingual-e5-small, are
used as their authors' pipelines use them: mean pooling over the attention mask, then L2
normalisation. E5 models also expect a prefix naming the text's role: "query: " for
questions and texts to classify, "passage: " for documents to retrieve; the manifest carries
the prefixes and `embed(..., role=)` chooses. The vectors serve the classification heads,
out-of-scope detection and knowledge-base retrieval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ctranslate2
import numpy as np

from mailbot.engine.manifest import ModelManifest, verify_model_dir
from mailbot.engine.runtime import (
    load_ct2_model,
    resolve_compute_type,
    resolve_device,
    to_float32,
)
from mailbot.engine.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

# What a text is to the encoder: something to classify or look up, or a document to retrieve.
EmbedRole = Literal["query", "passage"]

# A cap on characters fed to the tokenizer, per allowed token: English averages about four
# characters a token, so this never cuts a text the token limit would keep, while a
# multi-megabyte body is not tokenised in full only to be thrown away.
_CHARS_PER_TOKEN_CAP = 32


# Most tokens (rows x padded length) in one forward pass: 8 texts of 128 tokens, 4 of 256.
# Measured on 2 cores with ~180-token emails: 2048 embeds about twice as fast as 4096 (the
# working set stays in cache); 1024 is as fast again and keeps the multilingual encoder's
# peak RSS about 28 MB lower (265 rather than 293 MB: less activation memory per thread).
_BATCH_TOKENS = 1024


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
        self._tokenizer = load_tokenizer(model_dir, manifest.tokenizer, limit)
        self._prefixes = {"query": manifest.query_prefix, "passage": manifest.passage_prefix}
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
        """The embedding size (384 for all-MiniLM-L6-v2 and multilingual-e5-small)."""
        return self._dim

    def prefix(self, role: EmbedRole) -> str:
        """What `embed` puts before each text of this role ("query: " for E5, else "")."""
        return self._prefixes[role]

    def embed(self, texts: Sequence[str], *, role: EmbedRole = "query") -> Embeddings:
        """Embed texts in batches; rows come back in the order given.

        `role` is "query" for texts to classify and search queries, "passage" for
        knowledge-base passages; it only matters for encoders trained with prefixes (E5).
        """
        started = time.perf_counter()
        count = len(texts)
        if count == 0:
            return Embeddings(np.zeros((0, self._dim), dtype=np.float32), (), ())
        cap = self.max_input_tokens * _CHARS_PER_TOKEN_CAP
        prefix = self._prefixes[role]
        encodings = self._tokenizer.encode_batch([prefix + text[:cap] for text in texts])
        ids = [row for row, _ in encodings]
        truncated = tuple(
            cut or len(text) > cap for (_, cut), text in zip(encodings, texts, strict=True)
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
        ids = self._tokenizer.encode_batch(["probe"])[0][0]
        hidden = self._model.forward_batch([ids])
        return int(to_float32(hidden.last_hidden_state).shape[-1])
