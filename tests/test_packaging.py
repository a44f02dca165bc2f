"""The wheel ships every subpackage, the migrations and the templates."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "mailbot").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert config["package-dir"] == {"mailbot.migrations": "migrations",
                                     "mailbot.templates": "templates"}


def test_shipped_resources_resolve() -> None:
    from mailbot.db.session import migrations_dir
    from mailbot.resources import data_dir, templates_dir

    assert (migrations_dir() / "env.py").is_file()
    assert (templates_dir() / "prompts").is_dir()
    assert any((data_dir() / "samples").glob("*.eml"))
