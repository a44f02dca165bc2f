"""Prompts for the generator: the SLM prompt templates, put in the model's own chat format.

The templates (templates/prompts/slm_*.j2) are rendered by the same sandboxed renderer as
the cloud LLM's prompts, so the customer's words reach the model only inside defused
`<customer_email>` tags. An instruction-tuned model expects its chat format around that
text; it comes from the converted model's `tokenizer_config.json` (or `chat_template.jinja`),
and a model without one (a base model) gets the plain text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from mailbot.errors import ConfigError, ModelError
from mailbot.llm.prompts import PromptRenderer, default_prompts_dir

log = logging.getLogger(__name__)

SLM_TEMPLATES = ("slm_reply.j2", "slm_extract.j2")
# Where a template's fixed instructions end inside the chat format (never in real text).
_PREFIX_END = "\ue000mailbot-prefix-end\ue000"


class TextGenerator(Protocol):
    """What drafting and extraction need from the engine's `Generator`."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = 256, *, prefix: str = ""
    ) -> list[Any]: ...


class ChatFormat:
    """A model's chat template, rendered the way transformers renders it (sandboxed)."""

    def __init__(self, template: str, *, bos_token: str = "", eos_token: str = "",
                 strip_bos: bool = False) -> None:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = _raise_template_error
        try:
            self._template = env.from_string(template)
        except TemplateError as exc:
            raise ModelError(f"the model's chat template does not compile: {exc}") from None
        self.bos_token = bos_token
        self.eos_token = eos_token
        # The tokenizer adds BOS itself: a BOS in the text as well would be read twice.
        self.strip_bos = strip_bos

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> ChatFormat | None:
        """The chat format shipped with a converted model, or None when it has none."""
        config = _read_json(model_dir / "tokenizer_config.json")
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        jinja_file = model_dir / "chat_template.jinja"
        if not isinstance(template, str) and jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        if not isinstance(template, str) or not template.strip():
            return None
        bos, eos = _token(config.get("bos_token")), _token(config.get("eos_token"))
        return cls(template, bos_token=bos, eos_token=eos,
                   strip_bos=bool(bos) and _adds_bos(model_dir / "tokenizer.json"))

    def format(self, user: str) -> str:
        """`user` as the one user turn, followed by the cue for the assistant's answer."""
        from jinja2 import TemplateError

        try:
            text = str(self._template.render(
                messages=[{"role": "user", "content": user}], add_generation_prompt=True,
                bos_token=self.bos_token, eos_token=self.eos_token,
            ))
        except TemplateError as exc:
            raise ModelError(f"the model's chat template failed: {exc}") from None
        if self.strip_bos and text.startswith(self.bos_token):
            text = text[len(self.bos_token):]
        return text


class SlmPrompts:
    """Renders the SLM prompt templates and wraps them in the model's chat format."""

    def __init__(self, directory: Path | None = None, chat: ChatFormat | None = None) -> None:
        if directory is not None and not all((directory / n).is_file() for n in SLM_TEMPLATES):
            # A customised prompts folder made for the cloud LLM alone: ours ship with mailbot.
            log.info("%s has no SLM prompt templates; using the shipped ones", directory)
            directory = None
        self.directory = Path(directory) if directory is not None else default_prompts_dir()
        missing = [n for n in SLM_TEMPLATES if not (self.directory / n).is_file()]
        if missing:
            raise ConfigError(f"{self.directory}: the SLM prompt templates "
                              f"{', '.join(missing)} are missing; reinstall mailbot")
        self.renderer = PromptRenderer(self.directory)
        self.chat = chat
        # Each template's fixed instructions, where the folder has them (looked up once).
        self._instructions: dict[str, str] = {}
        for name in SLM_TEMPLATES:
            instructions = name.removesuffix(".j2") + "_instructions.j2"
            if (self.directory / instructions).is_file():
                self._instructions[name] = instructions

    @classmethod
    def for_model(cls, config: Any, model_dir: Path | None) -> SlmPrompts:
        """The configured prompts folder (`llm.prompts_dir`) in the model's chat format."""
        directory = config.base_dir / config.llm.prompts_dir if config.llm.prompts_dir else None
        chat = ChatFormat.from_model_dir(model_dir) if model_dir is not None else None
        return cls(directory, chat)

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        """One template rendered as the model is to see it."""
        text = self.renderer.render(name, context)
        return self.chat.format(text) if self.chat is not None else text

    def prefix(self, name: str, context: Mapping[str, Any]) -> str:
        """How every prompt from `name` begins: its fixed instructions as the model sees them.

        They come from `<name>_instructions.j2`, which the template includes first; "" when
        there is no such file (a customised template may lack one).
        """
        instructions = self._instructions.get(name)
        if instructions is None:
            return ""
        text = self.renderer.render(instructions, context)
        if self.chat is None:
            return text
        # The chat format wraps the whole user turn: cut it where the instructions end.
        formatted = self.chat.format(text + _PREFIX_END)
        end = formatted.find(_PREFIX_END)
        return formatted[:end] if end > 0 else ""


def _raise_template_error(message: str) -> None:
    from jinja2 import TemplateError

    raise TemplateError(message)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _token(value: Any) -> str:
    if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...}
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _adds_bos(tokenizer_path: Path) -> bool:
    """Whether the tokenizer puts a token before every text on its own (Llama's BOS)."""
    from tokenizers import Tokenizer

    try:
        return bool(Tokenizer.from_file(str(tokenizer_path)).encode("").ids)
    except Exception:  # noqa: BLE001 - tokenizers raises a bare Exception; the load reports it
        return False
