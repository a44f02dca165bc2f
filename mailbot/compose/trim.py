"""A model-written reply body without its own greeting and sign-off: the layout adds ours."""

from __future__ import annotations

import re

_GREETING = re.compile(
    r"\A\s*(?:hello|hi|hey|dear|good (?:morning|afternoon|evening)|hallo|guten tag"
    r"|liebe[rs]?|sehr geehrte[rs]?|hola|estimad[oa]|buenos días|bonjour|cher|chère)\b"
    r"[^\n.?]{0,40}[,!:]?[ \t]*\n+",
    re.IGNORECASE,
)
_SIGN_OFF = re.compile(
    r"\n[ \t]*(?:kind regards|best regards|best wishes|warm regards|regards|best|thanks"
    r"|thank you|cheers|sincerely|yours sincerely|mit freundlichen grüßen|viele grüße"
    r"|beste grüße|freundliche grüße|saludos|atentamente|un saludo|cordialement|bien à vous)"
    r"[ \t]*[,.!]?[ \t]*(?:\n[^\n]{0,60}){0,3}\s*\Z",
    re.IGNORECASE,
)



def trim_reply(body: str) -> str:
    """The reply without its own greeting and sign-off: the shared layout adds ours."""
    body = _GREETING.sub("", body, count=1)
    return _SIGN_OFF.sub("", body).strip()
