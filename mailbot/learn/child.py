"""The daemon's scheduled learning run, in a child process of its own.

Training imports scikit-learn and holds the training matrices: a hundred megabytes and more
at the peak, which a worker that runs for months should not keep (freed memory rarely goes
back to the system). The child runs the very command an admin would, `mailbot learn`,
with the worker's configuration file, and exits; the worker picks up what it promoted at
its next refresh.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

from mailbot.errors import ExitCode, TransientError

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 6 * 3600


class LearningFailed(TransientError):
    """The learning child process failed; the heads in service are unchanged."""


def learn_in_child(config_path: str, timeout: float = CHILD_TIMEOUT_S) -> list[dict[str, Any]]:
    """Run `mailbot learn --json` with this configuration file; its outcomes as JSON."""
    command = [sys.executable, "-m", "mailbot", "--config", config_path, "learn", "--json",
               "--quiet"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise LearningFailed(f"the learning run took over {timeout:.0f} s and was stopped; "
                             "run `mailbot learn` by hand to see why") from None
    if done.returncode == ExitCode.TEMPFAIL:
        raise LearningFailed((done.stderr.strip().splitlines() or ["busy"])[-1])
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LearningFailed(f"the learning run failed ({detail}); run `mailbot learn` to "
                             "see why")
    start = done.stdout.find("[")
    try:
        outcomes = json.loads(done.stdout[start:]) if start >= 0 else []
    except json.JSONDecodeError:
        raise LearningFailed("the learning run printed no outcome; run `mailbot learn` "
                             "to see why") from None
    return outcomes if isinstance(outcomes, list) else []
