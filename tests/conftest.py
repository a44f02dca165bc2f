"""Shared fixtures. Fixture modules live in tests/support/ and are pulled in here."""

from __future__ import annotations

from tests.support.database import *  # noqa: E402,F401,F403
from tests.support.dovecot import *  # noqa: E402,F401,F403
from tests.support.fake_openai import *  # noqa: F401,F403
from tests.support.models import *  # noqa: F401,F403
