"""Reply templates: Jinja2 files under templates/replies/, one or more per intent and
language, sharing a layout (greeting, body, signature).

Rendered in a sandbox with autoescape off (the output is plain text) and StrictUndefined,
so that a variable a template expects but did not get is an error, never an empty hole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from mailbot.errors import PermanentError
from mailbot.resources import templates_dir

REPLIES = "replies"


class TemplateProblem(PermanentError):
    """A reply template is missing a variable, broken, or cannot be found."""


class ReplyTemplates:
    """Finds and renders reply templates; user templates override the shipped ones."""

    def __init__(self, extra_dirs: Sequence[Path] = ()) -> None:
        search = [str(Path(d) / REPLIES) for d in extra_dirs] + [str(templates_dir() / REPLIES)]
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(search),
            autoescape=False,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self._versions: dict[str, tuple[list[Template], str]] = {}

    def find(self, intent: str, language: str) -> tuple[str, str] | None:
        """The template for an intent in a language, else in English; (name, language)."""
        for lang in dict.fromkeys((language, "en")):
            name = f"{intent}.{lang}.txt.j2"
            try:
                self.env.get_template(name)
            except TemplateNotFound:
                continue
            return name, lang
        return None

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        """Render a template; any problem names the template and what went wrong."""
        try:
            text = self.env.get_template(name).render(**context)
        except TemplateError as exc:
            raise TemplateProblem(f"reply template {REPLIES}/{name}: {exc}") from None
        return _tidy(text)

    def version(self, name: str) -> str:
        """A short hash of the template and its layout, recorded with every draft.

        Computed once per template and again only when a file changes on disk, so drafting
        does not re-read the templates for every message.
        """
        cached = self._versions.get(name)
        if cached is not None and all(t.is_up_to_date for t in cached[0]):
            return cached[1]
        parts = (name, *sorted(self._layouts(name)))
        digest = hashlib.sha256()
        for part in parts:
            source, _, _ = self.env.loader.get_source(self.env, part)  # type: ignore[union-attr]
            digest.update(source.encode())
        version = digest.hexdigest()[:12]
        self._versions[name] = ([self.env.get_template(part) for part in parts], version)
        return version

    def _layouts(self, name: str) -> list[str]:
        language = name.split(".")[-3] if name.count(".") >= 3 else "en"
        layout = f"layout.{language}.txt.j2"
        try:
            self.env.get_template(layout)
        except TemplateNotFound:
            return []
        return [layout]


def _tidy(text: str) -> str:
    # Collapse runs of blank lines left by optional blocks; keep paragraphs apart.
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue
        out.append(line)
    return "\n".join(out) + "\n"
