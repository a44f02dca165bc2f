"""Gaps in what the small model knows: the mail it sent away, clustered by meaning.

Mail routed out of scope or to the cloud LLM is embedded (the text the classifier reads) and
clustered; each cluster is listed with its size, a few subjects and the label the cloud model
gave most often, so a person can see a missing intent and add it
(`mailbot intents add NAME --from-cluster K`: the cluster's messages become people's labels,
trained on at the next `mailbot learn`). The clustering is recorded in `artifacts` (kind
"gaps": message ids only), so that K means the cluster the report showed.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from mailbot.classify.store import TextEncoder
from mailbot.db.artifacts import Artifact
from mailbot.db.llm_records import TeacherLabel
from mailbot.db.models import Event, Message
from mailbot.db.outcomes import HumanLabel, LabelKind, LabelSource
from mailbot.db.session import Database
from mailbot.errors import PermanentError
from mailbot.learn.dataset import message_texts
from mailbot.learn.embeddings import EmbeddingCache

GAPS_KIND = "gaps"


class NoGapReport(PermanentError):
    """There is no clustering to take a cluster from, or no such cluster."""


@dataclass(frozen=True, slots=True)
class GapCluster:
    """One cluster of mail the small model did not keep."""

    id: int
    size: int
    subjects: tuple[str, ...]
    suggested: str | None  # the cloud model's most frequent intent label in it
    suggested_share: float
    message_pks: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.id, "size": self.size, "subjects": list(self.subjects),
                "suggested": self.suggested, "suggested_share": round(self.suggested_share, 3),
                "messages": list(self.message_pks)}


def sent_away(database: Database, limit: int) -> list[int]:
    """The most recent messages routed to the cloud LLM or out of scope (newest first)."""
    with database.session() as session:
        rows = session.execute(
            select(Event.message_pk, Event.outcome, Event.details)
            .where(Event.stage == "route", Event.message_pk.is_not(None))
            .order_by(Event.id.desc()).limit(limit * 4)).all()
    found: list[int] = []
    for pk, outcome, details in rows:
        codes = (details or {}).get("codes") or []
        if (outcome == "llm" or "out_of_scope" in codes) and pk not in found:
            found.append(int(pk))
    return found[:limit]


def cluster_gaps(database: Database, encoder: TextEncoder, cache_dir: Any, *,
                 clusters: int | None = None, limit: int = 2000) -> list[GapCluster]:
    """Cluster the mail sent away and record the clustering; largest cluster first."""
    pks = sent_away(database, limit)
    with database.session() as session:
        texts = message_texts(session, pks)
        subjects = dict(session.execute(
            select(Message.id, Message.subject).where(Message.id.in_(list(texts)))).all())
        teacher = dict(session.execute(
            select(TeacherLabel.message_pk, TeacherLabel.label)
            .where(TeacherLabel.kind == "intent",
                   TeacherLabel.message_pk.in_(list(texts)))).all())
    kept = [pk for pk in pks if pk in texts]
    if len(kept) < 2:
        return []
    cache = EmbeddingCache(cache_dir, encoder)
    vectors = cache.embed([texts[pk] for pk in kept])
    k = clusters or max(2, min(20, round(np.sqrt(len(kept) / 2))))
    k = min(k, len(kept))
    from sklearn.cluster import KMeans

    assignment = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(vectors)
    groups: dict[int, list[int]] = {}
    for pk, label in zip(kept, assignment, strict=True):
        groups.setdefault(int(label), []).append(pk)
    ordered = sorted(groups.values(), key=len, reverse=True)
    result = []
    for index, members in enumerate(ordered, start=1):
        votes = Counter(teacher[pk] for pk in members if teacher.get(pk))
        best, count = votes.most_common(1)[0] if votes else (None, 0)
        result.append(GapCluster(
            index, len(members),
            tuple(str(subjects.get(pk) or "(no subject)") for pk in members[:3]),
            best, count / len(members), tuple(members)))
    now = datetime.now(UTC)
    with database.session() as session:
        session.add(Artifact(
            kind=GAPS_KIND, name="intent",
            version=f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}", path="", created_at=now,
            metrics={"clusters": [{"cluster": c.id, "messages": list(c.message_pks),
                                   "suggested": c.suggested} for c in result]}))
    return result


def add_intent_from_cluster(database: Database, name: str, cluster: int, *,
                            agent: str | None = None) -> int:
    """Label the messages of cluster `cluster` of the last gaps report with intent `name`."""
    with database.session() as session:
        row = session.scalar(select(Artifact).where(Artifact.kind == GAPS_KIND)
                             .order_by(Artifact.id.desc()).limit(1))
        if row is None:
            raise NoGapReport("no gaps report yet; run `mailbot report gaps` first")
        found = next((c for c in (row.metrics or {}).get("clusters", [])
                      if c.get("cluster") == cluster), None)
        if found is None:
            count = len((row.metrics or {}).get("clusters", []))
            raise NoGapReport(f"the last gaps report ({row.version}) has no cluster {cluster}; "
                              f"it has clusters 1 to {count}")
        present = set(session.scalars(select(Message.id).where(
            Message.id.in_([int(pk) for pk in found["messages"]]), Message.erased_at.is_(None))))
        for pk in sorted(present):
            session.add(HumanLabel(message_pk=int(pk), kind=LabelKind.INTENT, value=name,
                                   source=LabelSource.IMPORT, agent=agent,
                                   previous=found.get("suggested")))
        return len(present)
