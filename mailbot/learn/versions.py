"""Head versions: the history with metrics, and rolling back to an earlier one.

The worker serves the newest promoted version of a head (`HeadStore.newest_promoted`), so
rolling back demotes the versions after the one to return to; a running worker sees the
change at its next refresh and loads the head it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailbot.audit.events import record_event
from mailbot.classify.store import HeadRecord, HeadStore
from mailbot.errors import ModelError

LEARN_STAGE = "learn"


@dataclass(frozen=True, slots=True)
class Rollback:
    """What a rollback did."""

    name: str
    from_version: str | None  # None: the seed head was in service
    to_version: str | None  # None: back to the seed head
    demoted: tuple[str, ...]


def serving(store: HeadStore, name: str, encoder_version: str | None = None) -> HeadRecord | None:
    """The recorded version in service, or None when the seed head is."""
    return store.newest_promoted(name, encoder_version)


def history_row(record: HeadRecord, is_serving: bool) -> dict[str, Any]:
    """One version as `mailbot model history` and the dashboard show it, with its metrics."""
    metrics = record.metrics
    after = (metrics.get("learn") or {}).get("after") or {}
    return {
        "version": record.version, "created_at": record.created_at.isoformat(),
        "promoted": record.promoted, "serving": is_serving,
        "source": str(metrics.get("source") or ""), "examples": metrics.get("examples"),
        "cv_accuracy": metrics.get("cv_accuracy"), "holdout_accuracy": after.get("accuracy"),
        "escalated": after.get("escalated"), "thresholds": metrics.get("thresholds") or None,
        "sources": (metrics.get("learn") or {}).get("sources"),
    }


def rollback(store: HeadStore, name: str, version: str | None = None, *,
             encoder_version: str | None = None, actor: str = "cli") -> Rollback:
    """Go back to `version` (promoting it), or to the version before the one in service."""
    if store.database is None:
        raise ModelError("rolling back a head needs the database (database.url)")
    records = store.versions(name)
    current = serving(store, name, encoder_version)
    if version is None:
        if current is None:
            raise ModelError(f"no {name} head is promoted: the seed head is in service and "
                             "there is nothing to roll back")
        demote = [current]
        target = next((r for r in reversed(records) if r.promoted and r.id < current.id
                       and r.encoder_version in ("", current.encoder_version)), None)
    else:
        target = next((r for r in records if r.version == version), None)
        if target is None:
            known = ", ".join(r.version for r in records[-5:]) or "none recorded"
            raise ModelError(f"no {name} head with version {version!r} (latest: {known}; "
                             f"see `mailbot model history {name}`)")
        demote = [r for r in records if r.promoted and r.id > target.id]
        store.set_promoted(name, target.version, True)
    for record in demote:
        store.set_promoted(name, record.version, False)
    with store.database.session() as session:
        record_event(session, LEARN_STAGE, "rollback", actor=actor, details={
            "head": name, "from": current.version if current else None,
            "to": target.version if target else None,
            "demoted": [r.version for r in demote]})
    return Rollback(name, current.version if current else None,
                    target.version if target else None, tuple(r.version for r in demote))
