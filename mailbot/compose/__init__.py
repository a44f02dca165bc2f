"""Composing replies: templates, the optional generator behind its quality gates, the
safety checks every body passes, and the reply as a threaded MIME message."""
