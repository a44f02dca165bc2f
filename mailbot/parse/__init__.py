"""Parsing: raw bytes to an `InboundMessage` (text from plain or HTML parts, quoted history
and signature split off, thread links, attachments listed, auto-replies recognised)."""

from mailbot.parse.message import Address, Attachment, InboundMessage
from mailbot.parse.mime import parse_message

__all__ = ["Address", "Attachment", "InboundMessage", "parse_message"]
