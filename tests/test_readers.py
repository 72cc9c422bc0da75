from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragtune import index_sources, open_store
from ragtune.corpus import SkippedFile, discover_sources, not_read_text, read_documents
from ragtune.corpus import readers
from ragtune.errors import InputError

from conftest import write_jsonl


def _read(path: Path):  # type: ignore[no-untyped-def]
    files = discover_sources([path]).files
    return list(read_documents(files[0]))


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF with a text layer, assembled by hand (with a correct xref table)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_folder_discovery_is_recursive_and_keys_are_stable(docs_dir: Path) -> None:
    (docs_dir / ".hidden").mkdir()
    (docs_dir / ".hidden" / "secret.txt").write_text("hidden")
    (docs_dir / "image.png").write_bytes(b"\x89PNG")
    files, roots, not_read = discover_sources([docs_dir])
    assert not_read == {".png": 1}
    assert roots == [docs_dir.resolve().as_posix() + "/"]
    assert [f.key.removeprefix(docs_dir.resolve().parent.as_posix() + "/") for f in files] == [
        "docs/guide/pumps.md", "docs/guide/valves.txt", "docs/notes/cooking.txt", "docs/notes/garden.html"
    ]  # fmt: skip


def test_links_to_folders_are_followed_once_and_a_link_loop_ends(tmp_path: Path) -> None:
    """A folder of links to other folders is indexed through them (before, linked folders were left out without a
    word); a link back to a folder above ends the walk instead of looping; hidden folders stay out."""
    docs, elsewhere = tmp_path / "docs", tmp_path / "elsewhere"
    (docs / ".git").mkdir(parents=True)
    (elsewhere / "deeper").mkdir(parents=True)
    (docs / "own.txt").write_text("The pump seal wears when the pump runs dry.")
    (docs / ".git" / "hidden.txt").write_text("not a document")
    (elsewhere / "deeper" / "linked.md").write_text("# Boilers\nInspect the safety valve each year.")
    (docs / "manuals").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "back-to-docs").symlink_to(docs, target_is_directory=True)
    (docs / "gone.txt").symlink_to(tmp_path / "missing.txt")  # a broken link has nothing to read
    files, roots, not_read = discover_sources([docs])
    assert [f.key for f in files] == [f"{docs.resolve()}/manuals/deeper/linked.md", f"{docs.resolve()}/own.txt"]
    assert roots == [f"{docs.resolve()}/"]
    assert not_read_text(not_read) == "1 link whose target is missing"  # said, not passed over in silence


def test_a_store_kept_inside_the_folder_it_indexes_is_not_read_as_documents(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`ragtune index docs --store docs/store`: the second run counted the store's own files (its SQLite, FAISS and
    tantivy files) as "not read" documents on every run; the store's folder is left out of the walk."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.txt").write_text("The pump seal wears when the pump runs dry.")
    store = docs / "store"
    first = index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    again = index_sources(store, [docs], model=str(tiny_model_dir), show_progress=False)
    assert first.files_added == 1 and again.files_unchanged == 1
    assert first.files_not_read == {} and again.files_not_read == {}


def test_a_file_whose_name_is_not_utf8_is_indexed_under_a_printable_name(
    tmp_path: Path, tiny_model_dir: Path, store_address: str
) -> None:
    """A Latin-1 file name (`caf\\xe9`, from an old archive) crashed `index` with a tokenizer TypeError (the name's
    lone surrogates became the title). Now its key and title write the byte as `\\xe9`, its text is indexed, and
    a rerun finds it unchanged, then modified, then deleted, on both engines."""
    docs = tmp_path / "docs"
    docs.mkdir()
    latin1 = docs / os.fsdecode(b"caf\xe9-manual.txt")
    latin1.write_text("The espresso boiler must be descaled every month to keep the pump working.")
    (docs / "ok.txt").write_text("The grinder burrs wear after about five hundred kilograms of beans.")
    model = str(tiny_model_dir)
    assert index_sources(store_address, [docs], model=model, show_progress=False).files_added == 2
    printable = f"{docs.resolve()}/caf\\xe9-manual.txt"
    with open_store(store_address) as store:
        passages = {p.source: p for p in store.iter_passages()}
    assert sorted(passages) == [printable, f"{docs.resolve()}/ok.txt"]
    assert "descaled" in passages[printable].text
    assert index_sources(store_address, [docs], model=model, show_progress=False).files_unchanged == 2
    latin1.write_text("The steam wand gasket is replaced each year.")
    assert index_sources(store_address, [docs], model=model, show_progress=False).files_modified == 1
    latin1.unlink()
    assert index_sources(store_address, [docs], model=model, show_progress=False).files_deleted == 1


def test_a_folder_given_twice_or_inside_another_given_folder_is_read_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`ragtune index docs docs/sub` (or a folder named twice, as a shell glob can) stopped with "document id ... is
    already used by" that same file; each file is now read once, under the first path that holds it."""
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("Pump seals wear when the pump runs dry.")
    (docs / "sub" / "b.txt").write_text("Boilers need a yearly safety valve check.")
    found = discover_sources([docs, docs / "sub", docs])
    assert [f.key for f in found.files] == [f"{docs.resolve()}/a.txt", f"{docs.resolve()}/sub/b.txt"]
    assert found.roots == [f"{docs.resolve()}/", f"{docs.resolve()}/sub/"]
    store = tmp_path / "store"
    report = index_sources(store, [docs, docs / "sub"], model=str(tiny_model_dir), show_progress=False)
    assert (report.files_added, report.passages_total) == (2, 2)
    again = index_sources(store, [docs / "sub", docs], model=str(tiny_model_dir), show_progress=False)
    assert (again.files_unchanged, again.files_added, again.files_deleted) == (2, 0, 0)


def test_markdown_title_and_metadata(docs_dir: Path) -> None:
    [doc] = _read(docs_dir / "guide" / "pumps.md")
    path = (docs_dir / "guide" / "pumps.md").resolve().as_posix()
    assert doc.id == path
    assert doc.title == "Centrifugal pumps"
    assert doc.metadata == {"format": "md", "path": path}
    assert "Cavitation" in doc.text


def test_html_keeps_visible_text_only(docs_dir: Path) -> None:
    [doc] = _read(docs_dir / "notes" / "garden.html")
    assert doc.title == "Tomato garden"
    assert "tracking" not in doc.text and "color" not in doc.text
    assert "# Growing tomatoes" in doc.text
    assert "Tomatoes need six hours of sun and deep watering." in doc.text


@pytest.mark.parametrize("declaration", ['<meta charset="windows-1252">',
                                         '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'])
def test_an_html_page_in_the_charset_it_declares_is_read(tmp_path: Path, declaration: str) -> None:
    """A page saved from an older site (windows-1252 / ISO-8859-1, declared in its head) was skipped as "not
    UTF-8"; a browser reads it by its declaration, and so do we. A page that declares nothing is still skipped."""
    body = "<h1>Caf\u00e9 cr\u00e8me</h1><p>Descale the boiler every month.</p>"
    page = tmp_path / "page.html"
    page.write_bytes(f"<html><head>{declaration}<title>Entretien</title></head><body>{body}</body></html>".encode("latin-1"))
    [doc] = _read(page)
    assert doc.title == "Entretien" and "# Caf\u00e9 cr\u00e8me" in doc.text and "Descale the boiler" in doc.text
    page.write_bytes(f"<html><body>{body}</body></html>".encode("latin-1"))
    with pytest.raises(SkippedFile, match="not UTF-8 text"):
        _read(page)


def test_pdf_text_layer(tmp_path: Path) -> None:
    path = tmp_path / "manual.pdf"
    path.write_bytes(_minimal_pdf("Pressure relief valve opens at ten bar"))
    [doc] = _read(path)
    assert "Pressure relief valve opens at ten bar" in doc.text
    assert doc.metadata["pages"] == 1


def test_pdf_without_text_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(_minimal_pdf(""))
    with pytest.raises(SkippedFile, match="no text layer"):
        _read(path)


def test_a_broken_pdf_is_skipped_with_its_reason_and_nothing_else_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cut.pdf"
    path.write_bytes(b"%PDF-1.4 cut short by a failed download")
    with pytest.raises(SkippedFile, match="unreadable PDF"):
        _read(path)
    # pypdf's own repair notes ("EOF marker not found"), which reached the terminal beside the skip line
    assert not [record for record in caplog.records if record.name.startswith("pypdf")]


@pytest.mark.parametrize(
    ("name", "encode"),
    [
        ("notes.md", lambda text: b"\xef\xbb\xbf" + text.encode("utf-8")),  # UTF-8 with a byte-order mark
        ("notes.md", lambda text: text.encode("utf-16")),  # Windows Notepad's "Unicode": UTF-16 LE with its mark
        ("notes.txt", lambda text: b"\xfe\xff" + text.encode("utf-16-be")),
    ],
)
def test_files_saved_by_windows_tools_are_read(tmp_path: Path, name: str, encode) -> None:  # type: ignore[no-untyped-def]
    """A byte-order mark hid a Markdown title ("\\ufeff# ..."), and UTF-16 files were skipped as "binary content"."""
    text = "# Pompe \u00e0 chaleur\n\nThe heat pump's filter is cleaned every month.\n"
    path = tmp_path / name
    path.write_bytes(encode(text))
    [doc] = _read(path)
    assert doc.text.strip() == text.strip() and "\ufeff" not in doc.text
    if name.endswith(".md"):
        assert doc.title == "Pompe \u00e0 chaleur"


def test_a_jsonl_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """PowerShell 5's `Out-File -Encoding utf8` starts a file with a BOM: line 1 was "invalid JSON"."""
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"}\n')
    assert [(d.id, d.text) for d in _read(path)] == [("d1", "one"), ("d2", "two")]


def test_beir_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "corpus.jsonl",
        [{"_id": "d1", "title": "T1", "text": "one", "metadata": {"year": 2020}}, {"_id": 2, "text": "two"}],
    )
    docs = _read(path)
    assert [(d.id, d.title, d.text) for d in docs] == [("d1", "T1", "one"), ("2", "", "two")]
    assert docs[0].metadata == {"year": 2020}
    assert docs[0].source.endswith("/corpus.jsonl")


def test_broken_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: invalid JSON"):
        _read(path)


def test_jsonl_line_without_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "no id"}])
    with pytest.raises(InputError, match=r"corpus\.jsonl:1: missing '_id'"):
        _read(path)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("blob.txt", b"\x00\x01\x02binary\x00", "binary"),
        ("latin.txt", "pumps\ncaf\u00e9 cr\u00e8me".encode("latin-1"), r"not UTF-8 text \(line 2, byte 9\); re-save it as UTF-8"),
        ("empty.md", b"   \n\n", "empty"),
        ("empty.jsonl", b"", "empty"),
    ],
)
def test_unreadable_files_are_skipped(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SkippedFile, match=reason):
        _read(path)


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        discover_sources([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no supported files"):
        discover_sources([tmp_path / "empty"])


def test_large_text_file_is_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "STREAM_THRESHOLD_BYTES", 1000)
    path = tmp_path / "big.txt"
    path.write_text("A paragraph about pumps.\n\n" * 200)
    [doc] = _read(path)
    assert doc.text == "" and doc.stream_path == path.resolve()
