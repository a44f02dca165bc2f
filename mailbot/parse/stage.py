"""The parse stage: raw bytes to an `InboundMessage`; auto-replies and unparsable mail stop."""

from __future__ import annotations

from typing import Any

from mailbot.db.models import MessageStatus
from mailbot.errors import ParseError
from mailbot.parse.mime import parse_message
from mailbot.pipeline.case import Case, Step


class ParseStage:
    """Parses the raw message; machine-sent mail (auto-replies, bounces, lists) is left alone."""

    name = "parse"

    def run(self, case: Case) -> Step:
        try:
            message = parse_message(case.raw)
        except ParseError as exc:
            return Step(case, "error", status=MessageStatus.FAILED, reason=f"parse error: {exc}",
                        stop=True, details={"error": str(exc)})
        details: dict[str, Any] = {  # the Message-ID is on the message row, not here
            "body_source": message.body_source,
            "attachments": len(message.attachments),
            "defects": list(message.defects),
            "hidden_chars": message.hidden_chars,
            # What an all-cloud call would have sent (the cost report's estimate).
            "text_chars": len(message.subject or "") + len(message.new_text or message.text or ""),
        }
        parsed = case.with_(message=message)
        if message.auto_reply:
            return Step(parsed, "skipped", status=MessageStatus.SKIPPED,
                        reason=f"no automatic reply: {message.auto_reply}", stop=True,
                        details={**details, "auto_reply": message.auto_reply})
        return Step(parsed, "ok", status=MessageStatus.PARSED, details=details)
