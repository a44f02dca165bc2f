"""Jinja2 templates shipped with mailbot (installed as the package `mailbot.templates`):
replies/ (per intent and language), prompts/ (LLM and SLM prompts)."""
