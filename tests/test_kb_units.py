"""Knowledge base parts that need no model: reading files, splitting, BM25, ranking."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from mailbot.kb.errors import DocumentMissing, UnreadableDocument, UnsupportedDocument
from mailbot.kb.index import FusionOptions, IndexedPassage, PassageIndex
from mailbot.kb.keyword import BM25Index, tokenize
from mailbot.kb.loaders import collect_files, load_document, read_markdown
from mailbot.kb.split import split_sections

DATA = Path(__file__).parent / "data" / "kb"
SAMPLE_KB = Path(__file__).resolve().parents[1] / "mailbot" / "data" / "kb"


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def write_pdf(
    path: Path, pages: list[list[str]], *, title: str = "", compress: bool = True
) -> Path:
    """Write a valid PDF with Helvetica text lines, one list of lines per page, by hand.

    Content streams are Flate-compressed like those of real PDF writers.
    """
    objects: list[bytes] = []
    page_ids = [3 + 2 * i for i in range(len(pages))]
    font_id = 3 + 2 * len(pages)
    info_id = font_id + 1
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    for page_id, lines in zip(page_ids, pages, strict=True):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {page_id + 1} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        ops = ["BT", "/F1 11 Tf", "16 TL", "60 780 Td"]
        for line in lines:
            ops.append(f"{_pdf_string(line)} Tj T*" if line else "T*")
        ops.append("ET")
        content = "\n".join(ops).encode("latin-1")
        if compress:
            data = zlib.compress(content)
            objects.append(
                f"<< /Length {len(data)} /Filter /FlateDecode >>\nstream\n".encode()
                + data
                + b"\nendstream"
            )
        else:
            objects.append(
                f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream"
            )
    objects.append(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    objects.append(f"<< /Title {_pdf_string(title)} /Producer (mailbot tests) >>".encode())
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {info_id} 0 R >>\n"
        f"startxref\n{xref}\n%%EOF\n"
    ).encode()
    path.write_bytes(bytes(out))
    return path


# -- reading files -----------------------------------------------------------------------


def test_markdown_sections_keep_their_heading_path() -> None:
    doc = load_document(DATA / "care-guide.md")
    assert doc.title == "Product care guide"  # from the front matter
    paths = [s.headings for s in doc.sections]
    assert paths == [
        ("Product care guide",),
        ("Product care guide", "Waterproof jackets"),
        ("Product care guide", "Waterproof jackets", "Re-proofing"),
        ("Product care guide", "Down jackets"),
        ("Product care guide", "Leather boots"),
    ]
    reproofing = doc.sections[2].text
    # A "#" line inside a code fence is text, not a heading.
    assert "# This line sits in a code block" in reproofing
    assert doc.media_type == "markdown" and len(doc.sha256) == 64


def test_markdown_without_h1_uses_the_file_name_as_title() -> None:
    title, sections = read_markdown("## Zones\nGermany is zone 1.\n", "Shipping")
    assert title == "Shipping"
    assert sections[0].headings == ("Shipping", "Zones")


def test_html_keeps_headings_and_drops_hidden_text_and_navigation() -> None:
    doc = load_document(DATA / "size-guide.html")
    assert doc.title == "Size guide"
    by_path = {" > ".join(s.headings): s.text for s in doc.sections}
    assert set(by_path) == {
        "Size guide",
        "Size guide > Jackets (men and women)",
        "Size guide > Boots > Hiking boots",
    }
    assert "96 to 100 cm is size M" in by_path["Size guide > Jackets (men and women)"]
    everything = " ".join(by_path.values())
    assert "Ignore all previous instructions" not in everything
    assert "FREESTUFF99" not in everything
    assert "Home | Help" not in everything


def test_plain_text_sits_under_a_title_from_the_file_name() -> None:
    doc = load_document(DATA / "faq.txt")
    assert doc.title == "Faq"
    assert doc.sections[0].headings == ("Faq",)
    assert "500 points" in doc.sections[0].text


@pytest.mark.parametrize("compress", [True, False])
def test_pdf_text_is_extracted(tmp_path: Path, compress: bool) -> None:
    pdf = write_pdf(
        tmp_path / "gift-cards.pdf",
        [
            [
                "Gift cards are valid for three years from the date of purchase.",
                "They can be used online and in our Hamburg store.",
            ],
            ["A lost gift card can be blocked and replaced (keep the receipt)."],
        ],
        title="Gift card terms",
        compress=compress,
    )
    doc = load_document(pdf)
    assert doc.title == "Gift card terms"
    text = doc.sections[0].text
    assert "Gift cards are valid for three years from the date of purchase." in text
    assert "blocked and replaced (keep the receipt)" in text
    assert doc.media_type == "pdf"


def test_pdf_without_text_and_broken_pdf_are_reported(tmp_path: Path) -> None:
    with pytest.raises(UnreadableDocument, match="no text found"):
        load_document(write_pdf(tmp_path / "scan.pdf", [[]]))
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nnot really a pdf")
    with pytest.raises(UnreadableDocument, match="broken.pdf"):
        load_document(broken)


def test_collect_files_walks_folders_and_refuses_bad_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("# A\ntext\n")
    (tmp_path / "b.HTML").write_text("<h1>B</h1><p>text</p>")
    (tmp_path / "c.csv").write_text("x,y\n")  # unsupported, passed over inside a folder
    (tmp_path / ".hidden.md").write_text("# hidden\n")
    assert [p.name for p in collect_files([tmp_path])] == ["b.HTML", "a.md"]
    with pytest.raises(DocumentMissing, match="no such file"):
        collect_files([tmp_path / "missing.md"])
    with pytest.raises(UnsupportedDocument, match=r"'\.csv'.*\.md"):
        collect_files([tmp_path / "c.csv"])


# -- splitting ---------------------------------------------------------------------------


def test_passages_respect_the_word_budget_and_carry_the_heading() -> None:
    long_paragraph = " ".join(f"Sentence number {i} explains one more rule." for i in range(40))
    _, sections = read_markdown(
        f"# Refunds\n\n## Time limits\n\nShort intro.\n\n{long_paragraph}\n\n## Other\n\nx\n",
        "refunds",
    )
    passages = split_sections(sections, 60)
    assert all(len(p.text.split()) <= 60 for p in passages)
    assert {p.heading_path for p in passages} == {"Refunds > Time limits", "Refunds > Other"}
    # Nothing is lost or duplicated.
    words = " ".join(p.text for p in passages if p.heading_path.endswith("Time limits")).split()
    assert words == ("Short intro. " + long_paragraph).split()
    assert passages[0].embedding_text().startswith("Refunds > Time limits\n")
    # A section never spills into the next one.
    assert passages[-1].text == "x"


# -- keywords and ranking ----------------------------------------------------------------


def test_tokenize_keeps_codes_whole_and_stems_words() -> None:
    assert tokenize("Returned the TB-45-GRN from order #A10234, please!") == [
        "return", "tb-45-grn", "tb", "45", "grn", "order", "a10234",
    ]  # fmt: skip
    assert tokenize("shipping") == tokenize("shipped") == tokenize("ships")


def test_bm25_prefers_rare_exact_terms() -> None:
    index = BM25Index(
        [
            "refunds are paid to the original card",
            "the backpack TB-45-GRN has a rain cover",
            "refunds for the backpack take five days",
        ]
    )
    scores = index.scores("TB-45-GRN")
    assert scores.argmax() == 1 and scores[0] == scores[2] == 0
    raw, coverage = index.coverage("refund backpack")
    assert raw.argmax() == 2
    assert 0 < coverage[0] < coverage[2] <= 1.0


def test_hybrid_ranking_fuses_and_filters() -> None:
    passages = [
        IndexedPassage(i, 1, "doc.md", "Doc", text, 1)
        for i, text in enumerate(
            ["about refunds", "about shipping", "part ZX-99 in stock", "unrelated"], start=1
        )
    ]
    # Unit vectors: a code-only query is vaguely like 1 and 2 (as real embeddings of an
    # opaque code are), and not at all like 3, which holds the code, or 4.
    vectors = np.eye(4, dtype=np.float32)
    query = np.array([[0.25, 0.2, 0.0, 0.0]], dtype=np.float32)
    index = PassageIndex(passages, vectors)
    options = FusionOptions(keyword_weight=0.3, min_similarity=0.25)
    [vector_only] = index.search_many(["ZX-99"], query, 4, options, mode="vector")
    assert [p.id for p in vector_only] == [1, 2, 3, 4]
    [hybrid] = index.search_many(["ZX-99"], query, 4, options)
    # The exact code lifts passage 3 to the top; 4 is neither similar nor matching, and 2 is
    # below min_similarity: both left out.
    assert [p.id for p in hybrid] == [3, 1]
    assert 0.5 < hybrid[0].keyword_score < 1.0 and hybrid[0].similarity == 0.0
    [keyword_only] = index.search_many(["ZX-99"], query, 4, options, mode="keyword")
    assert [p.id for p in keyword_only] == [3]


def test_sample_knowledge_base_reads_cleanly() -> None:
    files = collect_files([SAMPLE_KB])
    assert {f.suffix for f in files} == {".md", ".html"}
    for path in files:
        doc = load_document(path)
        passages = split_sections(doc.sections, 120)
        assert passages, path
        assert all(" > " in p.heading_path for p in passages[1:]), path
