"""Named crash points for testing recovery: `MAILBOT_FAILPOINTS=draft.after_append` makes
the process kill itself (SIGKILL, no clean-up) when it reaches that point.

This is how the tests prove that a crash between two side effects (say, an IMAP APPEND and
the local commit that records it) never leaves a duplicate. Unset, it costs one lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "MAILBOT_FAILPOINTS"


def failpoint(name: str) -> None:
    """Die here, at once, if the environment names this point."""
    names = os.environ.get(ENV)
    if names and name in names.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
