"""Drafts into the account's Drafts folder, exactly once, and the folder found by its flag.

Each draft carries a token header. Before an APPEND that was tried before (a crash between
the APPEND and the local record of it, a lost connection) the folder is searched for the
token, so a retry never leaves two drafts; a first try goes straight to the APPEND, which
needs no folder selected and no search through every draft already there.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from imapclient import IMAPClient

from mailbot.compose.mime import TOKEN_HEADER
from mailbot.failpoints import failpoint

log = logging.getLogger(__name__)

_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]", re.IGNORECASE)
DEFAULT_DRAFTS = "Drafts"
DEFAULT_SENT = "Sent"


def special_folder(client: IMAPClient, use: bytes, fallback: str) -> str:
    """The folder the server marks with a SPECIAL-USE flag (RFC 6154: b"\\\\Drafts",
    b"\\\\Sent"), e.g. Gmail's "[Gmail]/Drafts"; `fallback` when none is marked."""
    try:
        listed = client.list_folders()
    except Exception:  # noqa: BLE001 - a server without LIST extensions: use the fallback
        return fallback
    for flags, _delimiter, name in listed:
        if use in {bytes(f) if not isinstance(f, bytes) else f for f in flags}:
            return str(name)
    return fallback


def drafts_folder(client: IMAPClient, configured: str) -> str:
    """The configured Drafts folder, else the server's \\Drafts folder, else "Drafts"."""
    return configured or special_folder(client, b"\\Drafts", DEFAULT_DRAFTS)


def find_by_header(client: IMAPClient, header: str, value: str) -> int | None:
    """The UID of a message in the selected folder with this header value, if any."""
    found = client.search(["HEADER", header, value])
    return int(found[0]) if found else None


def remove_drafts(client: IMAPClient, folder: str, token: str) -> int:
    """Delete the drafts carrying this token from `folder` (left selected); how many.

    Safe to repeat: a draft removed already is not found again.
    """
    if not client.folder_exists(folder):
        return 0
    client.select_folder(folder)
    stale = client.search(["HEADER", TOKEN_HEADER, token])
    if stale:
        client.delete_messages(stale, silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(stale)
    return len(stale)


def append_draft(client: IMAPClient, folder: str, token: str, mime: bytes, *,
                 tried_before: bool = True, known_folders: set[str] | None = None
                 ) -> tuple[int | None, bool]:
    """APPEND the draft with \\Draft unless the folder has it already: (UID, appended).

    `tried_before` False (the outbox row's first attempt, counted before it started) skips
    the search: nothing can have put that token there yet. `known_folders` remembers the
    folders seen to exist, so a drain of many drafts asks the server once.
    """
    if known_folders is None or folder not in known_folders:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        if known_folders is not None:
            known_folders.add(folder)
    if tried_before:
        client.select_folder(folder)
        uid = find_by_header(client, TOKEN_HEADER, token)
        if uid is not None:
            return uid, False
    response: Any = client.append(folder, mime, flags=[b"\\Draft"])
    failpoint("draft.after_append")
    match = _APPENDUID.search(response if isinstance(response, bytes) else b"")
    if match:
        return int(match.group(1)), True
    client.select_folder(folder)  # a server without UIDPLUS: find the UID by the token
    return find_by_header(client, TOKEN_HEADER, token), True
