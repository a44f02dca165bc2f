"""Where mailbot's shipped files are, whether run from a checkout or an installed wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def templates_dir() -> Path:
    """The top-level templates/ folder (installed as the package `mailbot.templates`)."""
    return Path(str(resources.files("mailbot.templates")))


def data_dir() -> Path:
    """Data files shipped inside the package (samples, seed sets, sample knowledge base)."""
    return Path(str(resources.files("mailbot") / "data"))
