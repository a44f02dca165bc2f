"""The review desk (`mailbot web`): queue, message pages, corrections, sending."""

from mailbot.web.app import create_app

__all__ = ["create_app"]
