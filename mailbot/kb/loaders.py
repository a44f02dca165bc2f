"""Read knowledge-base files into titled sections: Markdown, plain text, HTML and PDF.

Every format ends up as the same thing, a list of `Section`s, each the text under one heading
with the path of headings above it. HTML headings are turned into Markdown ones before it is
rendered as text, so both go through the one Markdown reader; PDF and plain text carry no
headings, so their sections sit under the document title.
"""

from __future__ import annotations

import hashlib
import logging
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailbot.kb.errors import DocumentMissing, UnreadableDocument, UnsupportedDocument

log = logging.getLogger(__name__)

MEDIA_TYPES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")
_TITLE_FIELD = re.compile(r"^title:\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Section:
    """The text under one heading, with the headings above it from the top down."""

    headings: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """One file read into sections, with what identifies its content."""

    path: Path
    media_type: str
    title: str
    sections: tuple[Section, ...]
    sha256: str
    size_bytes: int


def media_type(path: Path) -> str | None:
    """The media type the knowledge base reads `path` as, or None when unsupported."""
    return MEDIA_TYPES.get(path.suffix.lower())


def collect_files(paths: list[Path]) -> list[Path]:
    """Expand files and folders (recursively) into supported files, absolute and sorted.

    A missing path or an explicitly named file of an unsupported type is an error; inside a
    folder, unsupported and hidden files are passed over.
    """
    found: dict[Path, None] = {}
    for path in paths:
        if not path.exists():
            raise DocumentMissing(f"{path}: no such file or folder")
        if path.is_dir():
            for child in sorted(_walk(path)):
                found[child.resolve()] = None
        elif media_type(path) is None:
            raise UnsupportedDocument(
                f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
                f"the knowledge base reads {', '.join(sorted(MEDIA_TYPES))}"
            )
        else:
            found[path.resolve()] = None
    return list(found)


def _walk(folder: Path) -> Iterator[Path]:
    for child in folder.iterdir():
        if child.name.startswith("."):
            continue
        if child.is_dir():
            yield from _walk(child)
        elif child.is_file() and media_type(child) is not None:
            yield child


def load_document(path: Path) -> LoadedDocument:
    """Read one supported file into sections; raises `UnreadableDocument` when it gives no text."""
    kind = media_type(path)
    if kind is None:
        raise UnsupportedDocument(f"{path}: unsupported file type {path.suffix!r}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DocumentMissing(f"{path}: no such file") from None
    except OSError as exc:
        raise UnreadableDocument(f"{path}: cannot read ({exc.strerror})") from None
    fallback_title = _title_from_name(path)
    if kind == "markdown":
        title, sections = read_markdown(_decode(raw, path), fallback_title)
    elif kind == "html":
        title, sections = read_html(raw, fallback_title)
    elif kind == "pdf":
        title, sections = read_pdf(raw, path, fallback_title)
    else:
        title, sections = fallback_title, _plain_sections(_decode(raw, path), fallback_title)
    if not any(section.text.strip() for section in sections):
        hint = " (a scanned PDF has no text layer)" if kind == "pdf" else ""
        raise UnreadableDocument(f"{path}: no text found{hint}")
    return LoadedDocument(
        path=path,
        media_type=kind,
        title=title,
        sections=tuple(sections),
        sha256=hashlib.sha256(raw).hexdigest(),
        size_bytes=len(raw),
    )


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Old exports from Windows editors; cp1252 maps nearly every byte, so this rarely fails.
        log.warning("%s is not UTF-8; reading it as Windows-1252", path)
        return raw.decode("cp1252", errors="replace")


def _title_from_name(path: Path) -> str:
    words = re.sub(r"[_-]+", " ", path.stem).strip()
    words = re.sub(r"^\d+\s+", "", words) or words  # "01 refunds" -> "refunds"
    return words[:1].upper() + words[1:] if words else path.name


def read_markdown(text: str, fallback_title: str) -> tuple[str, list[Section]]:
    """Split Markdown at its headings (ATX and setext); headings in code fences are text."""
    text, front_title = _strip_front_matter(text)
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    lines: list[str] = []
    title = front_title
    in_fence = False

    def flush() -> None:
        body = _clean_markdown("\n".join(lines)).strip()
        if body:
            sections.append(Section(tuple(h for _, h in stack), body))
        lines.clear()

    def open_heading(level: int, heading: str) -> None:
        nonlocal title
        flush()
        heading = _clean_markdown(heading).strip()
        if level == 1 and title is None:
            title = heading
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            lines.append(line)
            continue
        if not in_fence:
            atx = _ATX.match(line)
            if atx:
                open_heading(len(atx.group(1)), atx.group(2))
                continue
            setext = _SETEXT.match(line)
            # A setext underline turns a one-line paragraph above it into a heading.
            one_line_paragraph = bool(lines and lines[-1].strip()) and (
                len(lines) == 1 or not lines[-2].strip()
            )
            if setext and one_line_paragraph:
                heading = lines.pop()
                open_heading(1 if setext.group(1)[0] == "=" else 2, heading)
                continue
        lines.append(line)
    flush()
    title = title or fallback_title
    return title, [_under_title(section, title) for section in sections]


def _under_title(section: Section, title: str) -> Section:
    """Every heading path starts at the document title, even without an H1."""
    if section.headings[:1] == (title,):
        return section
    return Section((title, *section.headings), section.text)


def _strip_front_matter(text: str) -> tuple[str, str | None]:
    if not text.startswith("---\n"):
        return text, None
    end = text.find("\n---", 4)
    if end < 0:
        return text, None
    match = _TITLE_FIELD.search(text[4:end])
    title = match.group(1).strip("\"'") if match else None
    return text[end + 4 :].lstrip("\n"), title


def _clean_markdown(text: str) -> str:
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    return _EMPHASIS.sub(r"\2", text)


def _plain_sections(text: str, title: str) -> list[Section]:
    text = text.replace("\r\n", "\n").strip()
    return [Section((title,), text)] if text else []


def read_html(raw: bytes, fallback_title: str) -> tuple[str, list[Section]]:
    """Render HTML as text without what a browser would hide, keeping h1-h6 as headings."""
    from inscriptis.html_engine import Inscriptis
    from inscriptis.model.config import ParserConfig
    from lxml import etree
    from lxml.html import document_fromstring

    from mailbot.parse.html import drop_invisible

    try:
        tree = document_fromstring(raw)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError) as exc:
        raise UnreadableDocument(f"unreadable HTML ({exc})") from None
    titles = tree.xpath("//title")
    page_title = " ".join(titles[0].text_content().split()) if titles else ""
    # Hidden text could smuggle instructions into drafts, as it can in email.
    drop_invisible(tree)
    # Site navigation and footers repeat on every page and answer no question.
    for element in list(tree.iter("nav", "footer")):
        element.drop_tree()
    for element in tree.iter("h1", "h2", "h3", "h4", "h5", "h6"):
        heading = " ".join(element.text_content().split())
        for child in list(element):
            element.remove(child)
        element.text = f"{'#' * int(str(element.tag)[1])} {heading}" if heading else ""
    rendered = textwrap.dedent(
        Inscriptis(tree, ParserConfig(display_links=False, display_images=False)).get_text()
    )
    # The first <h1> names the document; <title> (often "Page | Shop") only when there is none.
    return read_markdown(rendered, page_title or fallback_title)


def read_pdf(raw: bytes, path: Path, fallback_title: str) -> tuple[str, list[Section]]:
    """Extract a PDF's text layer page by page (pypdf); paragraphs are kept where it marks them."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:  # pragma: no cover - a dependency, but keep the message clear
        raise UnreadableDocument(
            f"{path}: reading PDF needs pypdf; install it with `pip install pypdf`"
        ) from None
    import io

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocument(f"{path}: the PDF is encrypted with a password")
        metadata_title = (reader.metadata.title or "").strip() if reader.metadata else ""
        pages = [page.extract_text() or "" for page in reader.pages]
    except UnreadableDocument:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableDocument(f"{path}: unreadable PDF ({exc})") from None
    title = metadata_title or fallback_title
    # A PDF line break is layout, not meaning: join lines, keep blank lines as paragraph breaks.
    text = "\n\n".join(_unwrap(page) for page in pages if page.strip())
    return title, _plain_sections(text, title)


def _unwrap(page: str) -> str:
    paragraphs = re.split(r"\n\s*\n", page)
    joined = []
    for paragraph in paragraphs:
        paragraph = re.sub(r"(\w)-\n(\w)", r"\1\2", paragraph)  # hyphenated at a line end
        joined.append(" ".join(paragraph.split()))
    return "\n\n".join(p for p in joined if p)
