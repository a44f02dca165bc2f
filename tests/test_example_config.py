"""config.example.toml is valid and documents every key the code accepts."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from mailbot import config as config_module
from mailbot.config import Config, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def test_example_config_is_valid(monkeypatch) -> None:
    config = load_config(EXAMPLE)
    assert config.accounts[0].name == "support"
    monkeypatch.setenv("MAILBOT_SUPPORT_PASSWORD", "pw")
    assert config.accounts[0].resolve_password() == "pw"


def _sections() -> dict[str, type[BaseModel]]:
    sections: dict[str, type[BaseModel]] = {}
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections[name] = annotation
    sections["accounts"] = config_module.AccountSettings
    return sections


def test_every_key_is_documented() -> None:
    text = EXAMPLE.read_text()
    # A key counts as documented when it appears as `key =` (set or commented out).
    documented = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.MULTILINE))
    missing = []
    for section, model in _sections().items():
        for key in model.model_fields:
            if key not in documented:
                missing.append(f"{section}.{key}")
    for key in Config.model_fields:
        if key not in _sections() and key != "source" and key not in documented:
            missing.append(key)
    assert missing == [], f"config.example.toml does not document: {missing}"
