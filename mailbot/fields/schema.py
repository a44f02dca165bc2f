"""The field schema: which fields to look for, how to validate them, and who needs them."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

from pydantic import ValidationError

from mailbot.config import FieldSettings, FieldSpec
from mailbot.errors import ConfigError

DEFAULT_SCHEMA_RESOURCE = "ecommerce.toml"


@dataclass(frozen=True, slots=True)
class FieldSchema:
    """Field specs plus the options every recogniser shares; built once, passed down."""

    specs: tuple[FieldSpec, ...]
    # intent -> names of the fields it requires
    required: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    languages: tuple[str, ...] = ("en", "de", "fr", "es", "it", "nl", "pt")
    date_order: str = "DMY"
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "AT", "CH")
    min_confidence: float = 0.5
    # Recall first (redaction before a cloud call): phones in every configured language's
    # regions and of unknown ranges, IBANs, cards and addresses however written. Values
    # found only this way are redacted, never taken as extracted fields.
    thorough: bool = False

    def spec(self, name: str) -> FieldSpec | None:
        """The spec of field `name`, or None."""
        for spec in self.specs:
            if spec.name == name:
                return spec
        return None

    def required_for(self, intent: str | None) -> tuple[str, ...]:
        """The fields a message of `intent` must carry (none for no intent)."""
        if intent is None:
            return ()
        return self.required.get(intent, ())


@lru_cache(maxsize=1)
def default_specs() -> tuple[FieldSpec, ...]:
    """The shipped e-commerce schema (mailbot/data/fields/ecommerce.toml), validated."""
    ref = resources.files("mailbot") / "data" / "fields" / DEFAULT_SCHEMA_RESOURCE
    text = ref.read_text(encoding="utf-8")
    entries = tomllib.loads(text).get("field", [])
    try:
        return tuple(FieldSpec.model_validate(entry) for entry in entries)
    except ValidationError as exc:  # a packaging bug, but say where
        raise ConfigError(f"built-in field schema {DEFAULT_SCHEMA_RESOURCE}: {exc}") from None


def build_schema(settings: FieldSettings | None = None) -> FieldSchema:
    """Merge the default schema with the configured fields and required-field overrides."""
    settings = settings or FieldSettings()
    specs: dict[str, FieldSpec] = {}
    if settings.use_default_schema:
        specs.update((s.name, s) for s in default_specs())
    for spec in settings.custom:
        specs[spec.name] = spec  # a custom field with a default's name replaces it
    required: dict[str, list[str]] = {}
    for spec in specs.values():
        for intent in spec.required_for:
            required.setdefault(intent, []).append(spec.name)
    for intent, names in settings.required.items():
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise ConfigError(
                f"fields.required.{intent}: unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(specs))}"
            )
        required[intent] = list(names)
    return FieldSchema(
        specs=tuple(specs.values()),
        required=MappingProxyType({k: tuple(v) for k, v in required.items()}),
        languages=tuple(settings.languages),
        date_order=settings.date_order,
        phone_regions=tuple(settings.phone_regions),
        min_confidence=settings.min_confidence,
    )
