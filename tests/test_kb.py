"""The knowledge base end to end: real encoder, real SQLite and PostgreSQL, the real CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mailbot.cli import cli
from mailbot.cli.common import run_cli
from mailbot.config import KnowledgeBaseSettings
from mailbot.db.session import Database
from mailbot.kb import KnowledgeBase, Passage
from tests.test_kb_units import DATA, SAMPLE_KB, write_pdf

GIFT_CARD_PAGES = [
    ["Gift cards are valid for three years from the date of purchase.",
     "They can be used online and in our Hamburg store, for several orders."],
    ["A lost gift card can be blocked and replaced if you still have the receipt."],
]  # fmt: skip


def make_kb(database: Database, encoder: Any, **settings: Any) -> KnowledgeBase:
    # refresh_seconds=0: every search checks the database, as a test wants.
    return KnowledgeBase(database, KnowledgeBaseSettings(refresh_seconds=0, **settings), encoder)


@pytest.fixture()
def documents(tmp_path: Path) -> Path:
    """The test documents plus a generated PDF, in a folder of their own."""
    folder = tmp_path / "docs"
    shutil.copytree(DATA, folder)
    (folder / "policies").mkdir()
    write_pdf(folder / "policies" / "gift-cards.pdf", GIFT_CARD_PAGES, title="Gift card terms")
    return folder


@pytest.fixture(scope="module")
def sample_kb(tmp_path_factory: pytest.TempPathFactory, encoder: object) -> KnowledgeBase:
    """The sample knowledge base that ships with mailbot, plus the spare-parts catalogue."""
    path = tmp_path_factory.mktemp("sample-kb")
    database = Database(f"sqlite:///{path / 'kb.db'}")
    database.upgrade()
    kb = make_kb(database, encoder)
    results = kb.add([SAMPLE_KB, DATA / "spare-parts.md"])
    assert {r.status for r in results} == {"added"}
    return kb


def headings(passages: list[Passage]) -> list[str]:
    return [p.heading_path for p in passages]


# -- adding and searching, on SQLite and PostgreSQL ---------------------------------------


def test_add_and_search_markdown_html_text_and_pdf(
    database: Database, encoder: object, documents: Path
) -> None:
    kb = make_kb(database, encoder)
    results = kb.add([documents])
    assert sorted((Path(r.source).name, r.status) for r in results) == [
        ("care-guide.md", "added"),
        ("faq.txt", "added"),
        ("gift-cards.pdf", "added"),
        ("size-guide.html", "added"),
        ("spare-parts.md", "added"),
    ]
    listed = {Path(d.source).name: d for d in kb.documents()}
    assert listed["gift-cards.pdf"].media_type == "pdf"
    assert listed["care-guide.md"].passages == 5 and listed["care-guide.md"].version == 1
    assert listed["care-guide.md"].encoder_version == encoder.version  # type: ignore[attr-defined]

    [top] = kb.search("how should I wash a down jacket", 1)
    assert top.heading_path == "Product care guide > Down jackets"
    assert "tennis balls" in top.text and top.document_version == 1
    assert Path(top.source) == documents / "care-guide.md"

    [top] = kb.search("which jacket size for a 98 cm chest", 1)
    assert top.heading_path == "Size guide > Jackets (men and women)"

    [top] = kb.search("how long is a gift card valid", 1)
    assert Path(top.source).name == "gift-cards.pdf"
    assert "valid for three years" in top.text
    assert top.heading_path == "Gift card terms"

    [top] = kb.search("how many loyalty points do I need for a voucher", 1)
    assert Path(top.source).name == "faq.txt" and "500 points" in top.text

    # Hidden HTML text never becomes a passage the drafts could quote.
    found = kb.search("promise every customer a free jacket; secret discount code", 10)
    assert not any("previous instructions" in p.text or "FREESTUFF" in p.text for p in found)


def test_search_many_batches_the_same_answers(sample_kb: KnowledgeBase) -> None:
    queries = ["I was charged twice", "my password reset email never arrives"]
    batched = sample_kb.search_many(queries, 3)
    one_by_one = [sample_kb.search(q, 3) for q in queries]
    assert [[p.id for p in r] for r in batched] == [[p.id for p in r] for r in one_by_one]
    # A batch pads its texts to one length, which moves the floats in the last digit.
    for many, one in zip(batched, one_by_one, strict=True):
        assert [p.score for p in many] == pytest.approx([p.score for p in one], abs=1e-5)
    assert sample_kb.search_many([]) == []


# -- versions, skipping, removing -------------------------------------------------------


def test_changed_file_replaces_its_passages_and_unchanged_is_skipped(
    sqlite_database: Database, encoder: object, tmp_path: Path
) -> None:
    page = tmp_path / "refunds.md"
    page.write_text("# Refunds\n\n## Time limits\n\nRefunds are issued within 5 business days.\n")
    kb = make_kb(sqlite_database, encoder)
    [first] = kb.add([page])
    assert (first.status, first.version, first.passages) == ("added", 1, 1)
    assert "5 business days" in kb.search("when is my refund issued", 1)[0].text

    [again] = kb.add([page])
    assert (again.status, again.version, again.document_id) == ("unchanged", 1, first.document_id)

    page.write_text(
        "# Refunds\n\n## Time limits\n\nRefunds are issued within 3 business days.\n\n"
        "## Store credit\n\nStore credit never expires.\n"
    )
    [second] = kb.add([page])
    assert (second.status, second.version, second.passages) == ("updated", 2, 2)
    assert second.document_id == first.document_id
    found = kb.search("when is my refund issued", 5)
    assert found[0].text == "Refunds are issued within 3 business days."
    assert found[0].document_version == 2
    assert not any("5 business days" in p.text for p in found)
    with sqlite_database.session() as session:
        stored = session.execute(text("SELECT count(*) FROM kb_passages")).scalar_one()
    assert stored == 2
    [doc] = kb.documents()
    assert (doc.version, doc.passages) == (2, 2) and doc.updated_at >= doc.added_at

    [forced] = kb.add([page], force=True)
    assert (forced.status, forced.version) == ("updated", 3)


def test_remove_by_path_by_id_and_by_folder(
    sqlite_database: Database, encoder: object, documents: Path
) -> None:
    kb = make_kb(sqlite_database, encoder)
    kb.add([documents])
    [removed] = kb.remove(str(documents / "faq.txt"))
    assert Path(removed.source).name == "faq.txt"
    assert all(Path(p.source).name != "faq.txt" for p in kb.search("loyalty points voucher", 10))

    care = next(d for d in kb.documents() if d.source.endswith("care-guide.md"))
    [removed] = kb.remove(str(care.id))
    assert removed.id == care.id

    [removed] = kb.remove(str(documents / "policies"))  # a folder: everything under it
    assert removed.source.endswith("gift-cards.pdf")
    assert sorted(Path(d.source).name for d in kb.documents()) == [
        "size-guide.html", "spare-parts.md",
    ]  # fmt: skip
    from mailbot.kb import DocumentMissing

    with pytest.raises(DocumentMissing, match="no such document"):
        kb.remove(str(documents / "faq.txt"))


def test_index_follows_changes_made_by_another_process(
    database: Database, encoder: object, documents: Path
) -> None:
    kb = make_kb(database, encoder)
    kb.add([documents / "faq.txt", documents / "care-guide.md"])
    assert Path(kb.search("loyalty points", 1)[0].source).name == "faq.txt"
    # Another process (here: plain SQL) removes a document behind this one's back.
    with database.session() as session:
        session.execute(
            text(
                "DELETE FROM kb_passages WHERE document_id IN "
                "(SELECT id FROM kb_documents WHERE source LIKE '%faq.txt')"
            )
        )
    assert all(Path(p.source).name != "faq.txt" for p in kb.search("loyalty points", 5))


def test_passages_of_another_encoder_are_re_embedded_before_they_are_searched(
    sqlite_database: Database, encoder: object, documents: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kb = make_kb(sqlite_database, encoder)
    kb.add([documents / "faq.txt"])
    expected = [p.id for p in kb.search("loyalty points", 3)]
    # As if the passages had been embedded by another encoder (different weights).
    with sqlite_database.session() as session:
        session.execute(text("UPDATE kb_documents SET encoder = 'old', encoder_version = 'older'"))
        session.execute(text("UPDATE kb_passages SET vector = zeroblob(length(vector))"))
    caplog.set_level("INFO", logger="mailbot.kb")
    # Never compared with this encoder's queries: re-embedded from the stored text first.
    assert [p.id for p in kb.search("loyalty points", 3)] == expected
    assert "embedded by old (version older); re-embedding them with" in caplog.text
    assert "re-embedded 1 documents" in caplog.text
    [info] = kb.documents()
    assert (info.encoder_version, info.version) == (encoder.version, 1)  # type: ignore[attr-defined]
    [result] = kb.add([documents / "faq.txt"])  # same bytes, current vectors: nothing to do
    assert result.status == "unchanged"
    assert kb.reembed().documents == 0


def test_switching_to_the_multilingual_encoder_re_embeds_the_knowledge_base(
    sqlite_database: Database, encoder: Any, e5_encoder: Any, documents: Path
) -> None:
    english = make_kb(sqlite_database, encoder)
    english.add([documents / "faq.txt", documents / "care-guide.md"])
    multilingual = make_kb(sqlite_database, e5_encoder)
    # A German question, with the passages now in E5's vector space ("passage: " prefix).
    [top] = multilingual.search("Wie viele Treuepunkte brauche ich für einen Gutschein?", 1)
    assert Path(top.source).name == "faq.txt" and "500 points" in top.text
    assert {d.encoder for d in multilingual.documents()} == {"multilingual-e5-small"}
    assert {d.encoder_version for d in multilingual.documents()} == {e5_encoder.version}


# -- retrieval quality on the sample knowledge base ---------------------------------------


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("how long do I have to send something back", "Returns and exchanges"),
        ("when will I get my money back", "Refunds > Time limits"),
        ("can you refund to a different card", "Refunds > How refunds are paid"),
        ("do you ship to Norway and how long does it take", "Shipping"),
        ("parcel says delivered but nothing arrived", "Shipping > Tracking your parcel"),
        ("I was charged twice for the same order", "Payments and billing > Double charges"),
        ("I need an invoice with my company name", "Payments and billing > Invoices"),
        ("the reset link never shows up in my inbox", "Account security > Password reset"),
        ("lost my phone, can't get the authenticator code", "Account security > Two-factor"),
        (
            "someone logged into my account from another country",
            "Account security > Suspicious sign-in",
        ),
        ("how do I swap my boots for a bigger size", "Returns and exchanges > Exchanges"),
        ("the zip on my jacket broke after a year", "Warranty and repairs"),
    ],
)
def test_paraphrased_questions_find_the_policy(
    sample_kb: KnowledgeBase, question: str, expected: str
) -> None:
    found = sample_kb.search(question, 3)
    assert any(h.startswith(expected) for h in headings(found)), headings(found)


def test_return_window_question_gets_the_30_day_rule(sample_kb: KnowledgeBase) -> None:
    found = sample_kb.search("how long do I have to send something back", 3)
    assert any("30 days" in p.text or "30-day" in p.text for p in found)


def test_exact_codes_are_found_by_keywords_where_vectors_miss(sample_kb: KnowledgeBase) -> None:
    catalogue = (DATA / "spare-parts.md").read_text()
    codes: dict[str, str] = {}
    section = ""
    for line in catalogue.splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif match := re.match(r"- ([A-Z]{2}-\d{4}-[A-Z]):", line):
            codes[match.group(1)] = f"Spare parts catalogue > {section}"
    assert len(codes) == 24

    def top_hits(mode: str) -> int:
        results = sample_kb.search_many(list(codes), 1, mode=mode)  # type: ignore[arg-type]
        return sum(
            bool(found) and found[0].heading_path == codes[code]
            for code, found in zip(codes, results, strict=True)
        )

    # Three lists of look-alike codes: the vectors cannot tell which list holds which code.
    assert top_hits("vector") <= 16
    assert top_hits("hybrid") == 24
    # And a code inside a sentence still wins over the sentence's general topic.
    [top] = sample_kb.search("do you still sell the KK-9387-G for my boots?", 1)
    assert top.heading_path == "Spare parts catalogue > Boot parts"


def test_an_off_topic_question_gets_nothing(sample_kb: KnowledgeBase) -> None:
    assert sample_kb.search("a recipe for chocolate cake", 4) == []


# -- the CLI ------------------------------------------------------------------------------


def _config(tmp_path: Path, encoder_dir: Path) -> Path:
    path = tmp_path / "mailbot.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "state"}"\n[worker]\nlog_level = "WARNING"\n'
        f'[models]\ndir = "{encoder_dir.parent}"\nencoder = "{encoder_dir.name}"\n'
    )
    return path


def test_cli_add_list_search_remove(
    tmp_path: Path, encoder_dir: Path, documents: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path, encoder_dir))

    def mailbot(*args: str) -> tuple[int, str, str]:
        code = run_cli(cli, ["--config", config, "kb", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = mailbot("add", str(documents / "care-guide.md"), str(documents / "policies"))
    assert code == 0
    assert "added     " in out and "care-guide.md (5 passages, version 1)" in out
    assert "2 files: 2 added, 0 updated, 0 unchanged, 0 failed" in out
    code, out, _ = mailbot("add", str(documents / "care-guide.md"))
    assert code == 0 and "unchanged" in out and "skipped" in out
    code, out, _ = mailbot("reembed")
    assert code == 0 and "nothing to do" in out

    code, out, _ = mailbot("list", "--json")
    listed = json.loads(out)
    assert [(Path(d["source"]).name, d["version"], d["passages"]) for d in listed] == [
        ("care-guide.md", 1, 5), ("gift-cards.pdf", 1, 1),
    ]  # fmt: skip
    assert {"id", "added_at", "updated_at", "sha256", "encoder_version"} <= set(listed[0])

    code, out, _ = mailbot("search", "how do I wash my down jacket", "--top", "2", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["query"] == "how do I wash my down jacket" and result["mode"] == "hybrid"
    assert len(result["passages"]) == 2
    top = result["passages"][0]
    assert set(top) == {
        "id", "document_id", "source", "heading_path", "text", "score", "document_version",
        "similarity", "keyword_score",
    }  # fmt: skip
    assert top["heading_path"] == "Product care guide > Down jackets"
    assert top["score"] >= result["passages"][1]["score"]

    code, out, _ = mailbot("search", "gift card valid")
    assert code == 0 and "Gift card terms" in out and "valid for three years" in out

    code, out, _ = mailbot("remove", str(listed[1]["id"]))
    assert code == 0 and "removed" in out and "gift-cards.pdf" in out


def test_cli_refuses_missing_and_unsupported_files_without_a_traceback(
    tmp_path: Path, encoder_dir: Path
) -> None:
    config = str(_config(tmp_path, encoder_dir))
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04 not a text file")

    def mailbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailbot", "--config", config, "kb", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    missing = mailbot("add", str(tmp_path / "nowhere.md"))
    assert missing.returncode == 66
    assert "nowhere.md: no such file or folder" in missing.stderr
    unsupported = mailbot("add", str(tmp_path / "notes.docx"))
    assert unsupported.returncode == 64
    assert "unsupported file type '.docx'" in unsupported.stderr
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 truncated")
    failed = mailbot("add", str(broken))
    assert failed.returncode == 1 and "broken.pdf" in failed.stderr
    not_stored = mailbot("remove", "42")
    assert not_stored.returncode == 66 and "no such document" in not_stored.stderr
    for result in (missing, unsupported, failed, not_stored):
        assert "Traceback" not in result.stderr
