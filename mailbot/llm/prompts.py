"""Prompt rendering: Jinja2 templates in a sandbox, customer text as delimited untrusted data.

The customer's words go to the model only inside `<customer_email>` tags (knowledge-base
passages inside `<reference>` tags), and every such tag already in the text is defused first,
so an email cannot close the block early and smuggle in instructions of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from mailbot.errors import ConfigError

# The tag names our templates use as delimiters; any of them in untrusted text is defused.
DELIMITER_TAGS = ("customer_email", "subject", "body", "reference", "facts", "instructions")
_TAG_RE = re.compile(
    r"<(\s*/?\s*)(" + "|".join(DELIMITER_TAGS) + r")\b", flags=re.IGNORECASE
)
# U+2039 SINGLE LEFT-POINTING ANGLE QUOTATION MARK: reads like "<" but closes no tag.
_DEFUSED_LT = "\u2039"

TEMPLATE_NAMES = (
    "classify_system.j2", "classify_user.j2",
    "extract_system.j2", "extract_user.j2",
    "reply_system.j2", "reply_user.j2",
    "repair.j2",
)


def neutralise(text: str) -> str:
    """Defuse every delimiter tag in untrusted text (`<customer_email>` -> `‹customer_email>`)."""
    return _TAG_RE.sub(lambda m: _DEFUSED_LT + m.group(1) + m.group(2), text)


def default_prompts_dir() -> Path:
    """The prompt templates shipped with mailbot (templates/prompts, installed as the
    package `mailbot.templates`)."""
    try:
        return Path(str(resources.files("mailbot.templates"))) / "prompts"
    except ModuleNotFoundError:  # a checkout whose editable install predates that mapping
        return Path(__file__).resolve().parents[2] / "templates" / "prompts"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a Chat Completions request."""

    role: str  # "system", "user" or "assistant"
    content: str

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class PromptRenderer:
    """Renders the LLM prompt templates; one instance is built at start-up and reused."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory else default_prompts_dir()
        missing = [n for n in TEMPLATE_NAMES if not (self.directory / n).is_file()]
        if missing:
            raise ConfigError(
                f"llm.prompts_dir: {str(self.directory)!r} lacks the prompt templates "
                f"{', '.join(missing)}; copy them from templates/prompts"
            )

    @cached_property
    def _env(self) -> Any:
        from jinja2 import FileSystemLoader, StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # Sandboxed so that a customised template cannot reach into Python; StrictUndefined
        # so a misspelt variable fails loudly instead of silently dropping text.
        return ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(self.directory)),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        """Render one template to text (surrounding blank lines trimmed)."""
        from jinja2 import TemplateError

        try:
            return str(self._env.get_template(name).render(**context)).strip()
        except TemplateError as exc:
            raise ConfigError(f"prompt template {name} in {self.directory}: {exc}") from None

    def conversation(self, task: str, context: Mapping[str, Any]) -> list[ChatMessage]:
        """The system and user messages of a task ("classify", "extract", "reply")."""
        return [
            ChatMessage("system", self.render(f"{task}_system.j2", context)),
            ChatMessage("user", self.render(f"{task}_user.j2", context)),
        ]


def email_context(subject: str | None, body: str) -> dict[str, str]:
    """The customer's subject and body, defused, for the templates' `email` variable."""
    return {"subject": neutralise(subject or ""), "body": neutralise(body)}
