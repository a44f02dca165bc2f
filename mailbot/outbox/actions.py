"""Server actions on customer mail: add a keyword, or move it to another folder.

Both are safe to repeat: a keyword already set is set again; a message already moved is no
longer in the folder, and a copy already in the target folder (found by Message-ID) is not
made twice. Without MOVE and UIDPLUS nothing is expunged: EXPUNGE would also remove the
messages a person marked deleted, so ours stay marked \\Deleted for the mail client to purge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from imapclient import IMAPClient

log = logging.getLogger(__name__)


def add_flag(client: IMAPClient, uids: Sequence[int], flag: str) -> None:
    """Add `flag` to these messages of the selected folder."""
    if uids:
        client.add_flags(list(uids), [flag], silent=True)


def move(client: IMAPClient, folder: str, uids: Sequence[int], target: str,
         message_ids: dict[int, str | None]) -> list[int]:
    """Move these messages of `folder` (selected) to `target`; returns the UIDs moved."""
    present = set(client.search(["UID", ",".join(str(u) for u in uids)])) if uids else set()
    here = [u for u in uids if u in present]  # the others were moved already
    if not here:
        return []
    if not client.folder_exists(target):
        client.create_folder(target)
    if client.has_capability("MOVE"):
        client.move(here, target)
        return here
    # COPY, then mark deleted. A copy made before a crash is found by Message-ID.
    copied = _already_in(client, target, [message_ids.get(u) for u in here])
    client.select_folder(folder)
    to_copy = [u for u in here if message_ids.get(u) not in copied]
    if to_copy:
        client.copy(to_copy, target)
    client.delete_messages(here, silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(here)
    else:
        log.info("%s has neither MOVE nor UIDPLUS: %d message(s) copied to %s and marked "
                 "\\Deleted, not expunged (an EXPUNGE would remove other deleted mail too)",
                 getattr(client, "host", "the server"), len(here), target)
    return here


def _already_in(client: IMAPClient, folder: str, message_ids: Sequence[str | None]) -> set[str]:
    """Which of these Message-IDs the folder holds already (it is left selected)."""
    client.select_folder(folder, readonly=True)
    return {mid for mid in message_ids
            if mid and client.search(["HEADER", "Message-ID", mid])}
