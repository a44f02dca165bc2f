"""Shared fixtures. Fixture modules live in tests/support/ and are pulled in here."""

from __future__ import annotations

import os
import tempfile

# mailbot keeps its state in the per-user data directory when data_dir is not set; the tests
# must never write into the real one (nor read models a user prepared there).
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="mailbot-tests-xdg-")
os.environ.pop("STATE_DIRECTORY", None)

from tests.support.database import *  # noqa: E402,F401,F403
from tests.support.dovecot import *  # noqa: E402,F401,F403
from tests.support.fake_openai import *  # noqa: F401,F403
from tests.support.models import *  # noqa: F401,F403
