"""Embeddings kept between learning runs, by the hash of the exact text.

Encoding is most of the time a learning run takes; the same mail is trained on again at
every run, so its vectors are kept in one file per encoder version under
`<models>/learn/`. The file holds hashes and vectors only, no text, and only those of the
last run: vectors of mail that was erased or left retention leave with the next run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mailbot.classify.store import TextEncoder, embed_texts
from mailbot.classify.train import Progress, _quiet_progress

log = logging.getLogger(__name__)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class EmbeddingCache:
    """Vectors by text hash for one encoder version, loaded once and saved after a run."""

    def __init__(self, directory: Path, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.path = Path(directory) / f"embeddings-{encoder.version[:16] or 'unknown'}.npz"
        self._index: dict[bytes, int] = {}
        self._vectors: list[np.ndarray] = []
        self._dirty = False
        self._used: set[bytes] = set()
        self.hits = 0
        self.misses = 0
        self._load()

    def _load(self) -> None:
        try:
            with np.load(self.path) as npz:
                keys, vectors = npz["keys"], npz["vectors"]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring the embedding cache %s: %s", self.path, exc)
            return
        self._vectors = [vectors]
        self._index = {bytes(k): i for i, k in enumerate(keys)}

    def embed(self, texts: Sequence[str], progress: Progress = _quiet_progress) -> np.ndarray:
        """Vectors for `texts` (float32, one row each), encoding only those not cached."""
        digests = [_digest(t) for t in texts]
        self._used.update(digests)
        missing: dict[bytes, str] = {}
        for digest, text in zip(digests, texts, strict=True):
            if digest not in self._index and digest not in missing:
                missing[digest] = text
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if missing:
            fresh = embed_texts(self.encoder, list(missing.values()), progress,
                                f"{len(missing)} new texts")
            offset = sum(len(v) for v in self._vectors)
            for i, digest in enumerate(missing):
                self._index[digest] = offset + i
            self._vectors.append(fresh.astype(np.float32))
            self._dirty = True
        if not texts:
            return np.zeros((0, 0), np.float32)
        table = self._table()
        return table[[self._index[d] for d in digests]]

    def _table(self) -> np.ndarray:
        if len(self._vectors) > 1:
            self._vectors = [np.vstack(self._vectors)]
        return self._vectors[0]

    def save(self) -> None:
        """Write the cache beside itself and rename it in (a reader never sees half)."""
        if not self._dirty and self._used == set(self._index):
            return
        table = self._table()
        kept = [(digest, row) for digest, row in self._index.items() if digest in self._used]
        keys = np.array([digest for digest, _ in kept], dtype="S32")
        table = table[[row for _, row in kept]] if kept else table[:0]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=".embeddings.", suffix=".npz",
                                           dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, keys=keys, vectors=table)
            os.replace(partial, self.path)
            self._index = {digest: i for i, (digest, _) in enumerate(kept)}
            self._vectors = [table]
        except OSError as exc:
            Path(partial).unlink(missing_ok=True)
            log.warning("cannot save the embedding cache %s: %s", self.path, exc.strerror)
            return
        self._dirty = False
