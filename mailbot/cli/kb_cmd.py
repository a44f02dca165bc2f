"""`mailbot kb`: add, list, remove and search the knowledge base that drafts are grounded in."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import click

from mailbot.cli.common import emit_json, get_state, json_option
from mailbot.errors import ExitCode

# Folders with at least this many files get a progress bar on stderr.
PROGRESS_MIN_FILES = 10


def register(group: click.Group) -> None:
    group.add_command(kb)


def _knowledge_base() -> Any:
    from mailbot.db.session import Database
    from mailbot.kb import KnowledgeBase

    config = get_state().config
    database = Database(config.database_url, echo=config.database.echo)
    database.ensure_schema()
    return KnowledgeBase.from_config(config, database)


def _shown(source: str) -> str:
    """A source path relative to the working directory when it lies below it."""
    try:
        return str(Path(source).relative_to(Path.cwd()))
    except ValueError:
        return source


@click.group()
def kb() -> None:
    """The knowledge base replies are grounded in: your policy pages and help articles."""


@kb.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Embed files again even when they are unchanged.")
@json_option
def add(paths: tuple[Path, ...], force: bool, as_json: bool) -> int:
    """Add Markdown, text, HTML and PDF files (folders recursively).

    A changed file replaces its passages (its version goes up); an unchanged one is skipped.
    """
    from mailbot.kb.loaders import collect_files

    files = collect_files(list(paths))  # a missing path or bad type stops here, before any work
    if not files:
        click.echo("no Markdown, text, HTML or PDF files found", err=True)
        return int(ExitCode.NO_INPUT)
    knowledge = _knowledge_base()
    results = []
    if len(files) >= PROGRESS_MIN_FILES:
        with click.progressbar(length=len(files), label="adding documents", file=sys.stderr) as bar:
            results = knowledge.add(files, force=force, on_file=lambda _r: bar.update(1))
    else:
        results = knowledge.add(files, force=force)
    if as_json:
        emit_json([dataclasses.asdict(r) for r in results])
    else:
        _print_add_results(results, quiet=len(files) >= PROGRESS_MIN_FILES)
    failed = any(r.status == "failed" for r in results)
    return int(ExitCode.FAILURE if failed else ExitCode.OK)


@kb.command()
@json_option
def reembed(as_json: bool) -> int:
    """Embed again, with the configured encoder, the passages another encoder embedded.

    Workers and `kb add` / `kb search` do this by themselves after `models.encoder` changes;
    run it to have it done before the first email arrives.
    """
    knowledge = _knowledge_base()
    result = knowledge.reembed()
    if as_json:
        emit_json({"encoder": knowledge.encoder.name, "version": knowledge.encoder.version,
                   **dataclasses.asdict(result)})
    elif result.documents:
        click.echo(f"re-embedded {result.documents} documents ({result.passages} passages) "
                   f"with {knowledge.encoder.name} in {result.seconds:.1f} s")
    else:
        click.echo(f"every passage is embedded by {knowledge.encoder.name} "
                   f"(version {knowledge.encoder.version}); nothing to do")
    return int(ExitCode.OK)


def _print_add_results(results: list[Any], *, quiet: bool) -> None:
    for r in results:
        if r.status == "failed":
            click.echo(f"failed    {r.error}", err=True)
        elif r.status == "unchanged":
            if not quiet:
                click.echo(f"unchanged {_shown(r.source)} (skipped; version {r.version})")
        elif not quiet:
            click.echo(
                f"{r.status:<9} {_shown(r.source)} ({r.passages} passages, version {r.version})"
            )
    counts = {s: sum(1 for r in results if r.status == s) for s in ("added", "updated")}
    unchanged = sum(1 for r in results if r.status == "unchanged")
    failed = sum(1 for r in results if r.status == "failed")
    passages = sum(r.passages for r in results if r.status in ("added", "updated"))
    click.echo(
        f"{len(results)} files: {counts['added']} added, {counts['updated']} updated, "
        f"{unchanged} unchanged, {failed} failed; {passages} passages embedded"
    )


@kb.command(name="list")
@json_option
def list_documents(as_json: bool) -> int:
    """List the documents: id, version, passages, when added and updated."""
    documents = _knowledge_base().documents()
    if as_json:
        emit_json([_document_json(d) for d in documents])
        return int(ExitCode.OK)
    if not documents:
        click.echo("the knowledge base is empty; add documents with `mailbot kb add PATH`")
        return int(ExitCode.OK)
    click.echo(f"{'ID':>4} {'VER':>3} {'PASSAGES':>8}  {'ADDED':16}  {'UPDATED':16}  SOURCE")
    for d in documents:
        click.echo(
            f"{d.id:>4} {d.version:>3} {d.passages:>8}  {d.added_at:%Y-%m-%d %H:%M}  "
            f"{d.updated_at:%Y-%m-%d %H:%M}  {_shown(d.source)}"
        )
    return int(ExitCode.OK)


def _document_json(document: Any) -> dict[str, Any]:
    record = dataclasses.asdict(document)
    record["added_at"] = document.added_at.isoformat()
    record["updated_at"] = document.updated_at.isoformat()
    return record


@kb.command()
@click.argument("references", nargs=-1, required=True, metavar="PATH|ID...")
def remove(references: tuple[str, ...]) -> int:
    """Remove documents by id or path (a folder removes everything under it)."""
    knowledge = _knowledge_base()
    for reference in references:
        for d in knowledge.remove(reference):
            click.echo(
                f"removed {d.id} {_shown(d.source)} (version {d.version}, {d.passages} passages)"
            )
    return int(ExitCode.OK)


@kb.command()
@click.argument("query")
@click.option(
    "--top",
    "top_k",
    type=click.IntRange(1, 100),
    default=None,
    help="How many passages to show (default: kb.top_k).",
)
@click.option(
    "--mode",
    type=click.Choice(["hybrid", "vector", "keyword"]),
    default="hybrid",
    show_default=True,
    help="Rank by both retrievers fused, or by one alone.",
)
@json_option
def search(query: str, top_k: int | None, mode: str, as_json: bool) -> int:
    """Show the passages that best answer QUERY, with scores, heading path and source."""
    knowledge = _knowledge_base()
    started = time.perf_counter()
    passages = knowledge.search(query, top_k, mode=mode)  # type: ignore[arg-type]
    elapsed_ms = (time.perf_counter() - started) * 1000
    if as_json:
        emit_json(
            {
                "query": query,
                "mode": mode,
                "elapsed_ms": round(elapsed_ms, 1),
                "passages": [dataclasses.asdict(p) for p in passages],
            }
        )
        return int(ExitCode.OK)
    if not passages:
        click.echo("no passage matches; is the knowledge base empty? (`mailbot kb list`)")
        return int(ExitCode.OK)
    for rank, p in enumerate(passages, start=1):
        click.echo(
            f"{rank}. score {p.score:.3f} (cosine {p.similarity:.3f}, bm25 {p.keyword_score:.2f})"
            f"  {p.heading_path}  [{_shown(p.source)} v{p.document_version}]"
        )
        click.echo("   " + p.text.replace("\n", "\n   "))
        click.echo()
    return int(ExitCode.OK)
