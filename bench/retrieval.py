"""Knowledge-base retrieval latency: the in-memory hybrid index against brute-force baselines.

Builds N synthetic passages (default 10,000) in a scratch SQLite knowledge base: ~110-word
texts drawn from the sample knowledge base's vocabulary (so BM25 sees realistic postings),
sprinkled with product codes and order numbers, and **random unit vectors** (384 floats) as
their embeddings; a search's cost does not depend on what the vectors say, and embedding
10,000 passages would take minutes on two cores. Then, in one process, it times per query:

- `search`: the hybrid ranking `KnowledgeBase.search` runs (matrix product + BM25 + fusion),
  with the query vector given; **query embedding excluded**, timed separately below;
- `embed`: embedding one query with the real encoder (when its model directory exists);
- `sql-scan`: the baseline without an in-memory index: read every vector and text from the
  database for each query, then the same numpy scoring;
- `pure-python`: the baseline without numpy: cosine and BM25 in Python loops over the
  in-memory passages.

    .venv/bin/python bench/retrieval.py [--passages 10000] [--queries 300] [--models DIR]

It prints p50/p95 for each and the baselines' p95 divided by the index's p95.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from mailbot.config import KnowledgeBaseSettings  # noqa: E402
from mailbot.db.base import utcnow  # noqa: E402
from mailbot.db.kb_models import KBDocument, KBPassage  # noqa: E402
from mailbot.db.session import Database  # noqa: E402
from mailbot.kb import KnowledgeBase, Passage  # noqa: E402
from mailbot.kb.index import FusionOptions  # noqa: E402
from mailbot.kb.keyword import tokenize  # noqa: E402
from mailbot.kb.loaders import collect_files, load_document  # noqa: E402

DIM = 384
SAMPLE_KB = Path(__file__).resolve().parent.parent / "mailbot" / "data" / "kb"
QUESTIONS = [
    "how long do I have to send something back",
    "when will I get my money back",
    "I was charged twice for the same order",
    "do you ship to Norway and how long does it take",
    "the password reset email never arrives",
    "can I cancel my order A10234",
    "is the TB-45-GRN waterproof",
    "how much does it cost to fix my boots",
]


class _FakeEncoder:
    """Stands in for the encoder when only the search itself is timed (vectors are given)."""

    name = "random-unit-vectors"
    version = "bench"
    dim = DIM


def _vocabulary() -> list[str]:
    words: list[str] = []
    for path in collect_files([SAMPLE_KB]):
        for section in load_document(path).sections:
            words.extend(section.text.split())
    return words


def _unit(rng: np.random.Generator, rows: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build(database: Database, count: int, seed: int) -> None:
    """Insert `count` synthetic passages in documents of 20 passages each."""
    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary()
    vectors = _unit(rng, count)
    now = utcnow()
    per_document = 20
    with database.session() as session:
        for start in range(0, count, per_document):
            doc = KBDocument(
                source=f"/bench/doc-{start // per_document:05d}.md", title="Bench",
                media_type="markdown", sha256="0" * 64, size_bytes=0, version=1,
                passage_count=per_document, encoder=_FakeEncoder.name,
                encoder_version=_FakeEncoder.version, added_at=now, updated_at=now,
            )  # fmt: skip
            session.add(doc)
            session.flush()
            for position, row in enumerate(range(start, min(start + per_document, count))):
                words = rnd.choices(vocabulary, k=rnd.randint(80, 140))
                words.insert(rnd.randrange(len(words)), f"A{10000 + row}")
                words.insert(rnd.randrange(len(words)), f"PX-{row:05d}-{rnd.choice('ABCDEFG')}")
                session.add(KBPassage(
                    document_id=doc.id, position=position,
                    heading_path=f"Bench {row // per_document} > Section {position}",
                    text=" ".join(words), token_count=0, vector=vectors[row].tobytes(),
                ))  # fmt: skip


def percentiles(times: Sequence[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    ordered = np.sort(np.asarray(times)) * 1000
    return float(np.percentile(ordered, 50)), float(np.percentile(ordered, 95))


def timed(fn: Callable[[int], object], runs: int) -> list[float]:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return times


def pure_python_search(
    passages: list[tuple[list[float], Counter[str], int]],
    idf: dict[str, float],
    average: float,
    query: str,
    vector: list[float],
    top_k: int,
) -> list[int]:
    """The same weighted sum, in plain Python (the baseline)."""
    terms = set(tokenize(query))
    known = sum(idf.get(t, 0.0) for t in terms)
    rarest = math.log(1 + (len(passages) - 0.5) / 1.5)
    reference = max(known, rarest) if known > 0 else math.inf
    scored = []
    for row, (values, counts, length) in enumerate(passages):
        cosine = sum(a * b for a, b in zip(values, vector, strict=True))
        bm25 = 0.0
        for term in terms:
            tf = counts.get(term, 0)
            if tf:
                norm = 1.2 * (0.25 + 0.75 * length / average)
                bm25 += idf[term] * tf * 2.2 / (tf + norm)
        scored.append((0.7 * cosine + 0.3 * min(bm25 / reference, 1.0), -row))
    scored.sort(reverse=True)
    return [-row for _, row in scored[:top_k]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--baseline-queries", type=int, default=20)
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ.get("MAILBOT_TEST_MODELS", "var/models")),
        help="Where the converted encoder lives.",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        database = Database(f"sqlite:///{scratch}/bench.db")
        database.upgrade()
        started = time.perf_counter()
        build(database, args.passages, args.seed)
        print(
            f"built {args.passages} passages in {time.perf_counter() - started:.1f} s "
            "(texts from the sample KB's words, random unit vectors)"
        )

        settings = KnowledgeBaseSettings(refresh_seconds=3600)
        kb = KnowledgeBase(database, settings, _FakeEncoder())  # type: ignore[arg-type]
        started = time.perf_counter()
        index = kb.index()
        print(
            f"index loaded from the database in {(time.perf_counter() - started) * 1000:.0f} ms"
            f" ({len(index)} passages, {index.matrix.nbytes / 2**20:.1f} MiB of vectors)"
        )

        # Random vectors are all dissimilar to a query, so the min_similarity cut would drop
        # most results; rank everything, as the pure-Python baseline does.
        options = FusionOptions(keyword_weight=settings.keyword_weight, min_similarity=-1.0)
        queries = [
            rnd.choice(QUESTIONS) if i % 3 else f"PX-{rnd.randrange(args.passages):05d}"
            for i in range(args.queries)
        ]
        vectors = _unit(np.random.default_rng(args.seed + 1), args.queries)

        def search(i: int) -> list[list[Passage]]:
            return index.search_many([queries[i]], vectors[i : i + 1], args.top, options)

        timed(search, 10)  # warm-up
        results = {"search": percentiles(timed(search, len(queries)))}

        def sql_scan(i: int) -> object:
            from mailbot.kb.index import PassageIndex
            from mailbot.kb.store import load_passages

            with database.session() as session:
                passages, matrix, _ = load_passages(session, _FakeEncoder.version, DIM)
            return PassageIndex(passages, matrix).search_many(
                [queries[i]], vectors[i : i + 1], args.top, options
            )

        results["sql-scan"] = percentiles(timed(sql_scan, args.baseline_queries))

        counted = [Counter(tokenize(f"{p.heading_path}\n{p.text}")) for p in index.passages]
        lengths = [sum(c.values()) for c in counted]
        df: Counter[str] = Counter(t for c in counted for t in c)
        n = len(counted)
        idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        plain = [
            (row.tolist(), c, ln) for row, c, ln in zip(index.matrix, counted, lengths, strict=True)
        ]
        average = sum(lengths) / n

        def pure_python(i: int) -> list[int]:
            return pure_python_search(
                plain, idf, average, queries[i], vectors[i].tolist(), args.top
            )

        results["pure-python"] = percentiles(timed(pure_python, args.baseline_queries))

        # The baseline must rank like the index, or the ratio compares different work.
        agree = sum(
            index.passages[pure_python(i)[0]].id == search(i)[0][0].id
            for i in range(args.baseline_queries)
        )
        print(
            f"check: pure-python and the index agree on the top passage for {agree} of "
            f"{args.baseline_queries} queries"
        )

        encoder_dir = args.models / "all-MiniLM-L6-v2"
        if (encoder_dir / "model.bin").exists():
            from mailbot.engine import Encoder

            encoder = Encoder.load(encoder_dir)
            encoder.embed(["warm-up"])
            results["embed"] = percentiles(
                timed(lambda i: encoder.embed([queries[i]]), min(len(queries), 100))
            )
        else:
            print(f"(no encoder in {encoder_dir}: query embedding not timed; pass --models)")

    print(
        f"\n{'':<12} {'p50 ms':>8} {'p95 ms':>8}   (cores: {os.cpu_count()}, "
        f"{args.passages} passages, top {args.top})"
    )
    labels = {
        "search": "index search (hybrid, embedding excluded)",
        "embed": "query embedding (encoder, one query)",
        "sql-scan": "baseline: read the KB from SQL per query",
        "pure-python": "baseline: pure-Python brute force",
    }
    for key in ("search", "embed", "sql-scan", "pure-python"):
        if key in results:
            p50, p95 = results[key]
            print(f"{key:<12} {p50:8.2f} {p95:8.2f}   {labels[key]}")
    search_p95 = results["search"][1]
    if "embed" in results:
        print(
            f"\nsearch + embedding p95 (sum of p95s, an upper bound): "
            f"{search_p95 + results['embed'][1]:.2f} ms"
        )
    for key in ("sql-scan", "pure-python"):
        print(f"{key} p95 / index p95 = {results[key][1] / search_p95:.0f}x")


if __name__ == "__main__":
    main()
