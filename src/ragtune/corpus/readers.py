"""Readers: files and folders → `Document`s.

Supported: `.txt`, `.md`/`.markdown`, `.html`/`.htm` (visible text only), `.pdf` (text layer) and `.jsonl` in BEIR
corpus format (`_id`, `title`, `text`). Each source file's key is its resolved absolute path: its identity for
incremental updates and the `source` of its documents, unique whatever roots are indexed into one store (two folders
that share a name, `projA/docs` and `projB/docs`, stay apart).
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ragtune.errors import InputError, missing_dependency
from ragtune.fsutil import printable_path
from ragtune.jsonl import iter_json_objects
from ragtune.types import Document

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".jsonl"}

# Plain-text files above this size are not loaded whole: the chunker streams them paragraph by paragraph.
STREAM_THRESHOLD_BYTES = 8 * 1024 * 1024
_SNIFF_BYTES = 1024 * 1024


class SkippedFile(Exception):
    """A file that cannot be read as a document; it is counted and reported, and indexing goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SourceFile:
    """A file to index. `key` (its resolved absolute path) identifies it across runs; `root_key` is the root it was
    found under (a folder's path ending in `/`, or the file itself). `legacy_key` is the key stores of format 1 gave
    it (`<root folder name>/<path inside it>`), used once to migrate such a store."""

    path: Path
    key: str
    root_key: str
    size: int
    mtime_ns: int
    legacy_key: str = ""

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()

    @property
    def stem(self) -> str:
        """The file's name without its suffix, printable (the title of a document that names none)."""
        return printable_path(self.path.stem)


class Discovered(NamedTuple):
    """What a folder walk found: the files to read, the roots they were found under, and how many files of each
    other type were passed over (`.docx` → 180; `""` for names without an extension; `BROKEN_LINKS`), so a user
    learns what was not indexed."""

    files: list[SourceFile]
    roots: list[str]
    not_read: dict[str, int]


def discover_sources(paths: Sequence[str | Path], leave_out: Sequence[Path] = ()) -> Discovered:
    """List the supported files under each path (recursively; hidden files and folders are ignored, and the
    folders in `leave_out`: a store kept inside the folder it indexes).

    Returns the files, the root keys they were found under (a file that once existed under a root key but is no
    longer found has been deleted), and the count of other files by type.
    """
    if not paths:
        raise InputError("no source given: pass one or more files or folders to index")
    files: list[SourceFile] = []
    roots: list[str] = []
    not_read: Counter[str] = Counter()
    left_out = {os.path.realpath(folder) for folder in leave_out}
    for given in paths:
        raw, root = printable_path(str(given)), Path(given).expanduser()
        if not root.exists():
            raise InputError(f"source '{raw}' does not exist: check the path")
        root = root.resolve()
        if root.is_file():
            if root.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise InputError(f"'{raw}' is not a supported file type ({', '.join(sorted(SUPPORTED_SUFFIXES))})")
            roots.append(printable_path(root.as_posix()))
            files.append(_source_file(root, printable_path(root.as_posix()), printable_path(root.name)))
            continue
        found: list[Path] = []
        others: Counter[str] = Counter()
        for path in _visible_files_under(root, left_out):
            if not path.is_file():
                if path.is_symlink() and not path.exists():
                    others[BROKEN_LINKS] += 1
                continue
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(path)
            else:
                others[path.suffix.lower()] += 1
        not_read.update(others)
        if not found:
            held = f"; it holds {not_read_text(dict(others.most_common()))}" if others else ""
            raise InputError(
                f"folder '{raw}' holds no supported files ({', '.join(sorted(SUPPORTED_SUFFIXES))}){held}: nothing to "
                "index"
            )
        root_key = printable_path(root.as_posix().rstrip("/") + "/")
        roots.append(root_key)
        files.extend(
            _source_file(p, root_key, printable_path(f"{root.name}/{p.relative_to(root).as_posix()}")) for p in found
        )
    first_found: dict[str, SourceFile] = {}
    for source in files:  # a file under two of the paths given is read once, under the first
        first_found.setdefault(source.key, source)
    return Discovered(list(first_found.values()), list(dict.fromkeys(roots)), dict(not_read.most_common()))


BROKEN_LINKS = "broken link"
"""The `not_read` count of links whose target is missing (a file on a drive not mounted now, say): nothing to read,
and a file indexed before through such a link is removed from the store like a deleted one."""


def not_read_text(not_read: dict[str, int]) -> str:
    """`{".docx": 180, "": 2, "broken link": 1}` → "180 .docx files, 2 files without an extension, 1 link whose
    target is missing"."""
    return ", ".join(_not_read_kind(kind, count) for kind, count in not_read.items())


def _not_read_kind(kind: str, count: int) -> str:
    if kind == BROKEN_LINKS:
        return f"{count} link{'s' if count > 1 else ''} whose target is missing"
    return f"{count} {kind + ' ' if kind else ''}file{'s' if count > 1 else ''}{'' if kind else ' without an extension'}"


def _visible_files_under(root: Path, left_out: set[str]) -> list[Path]:
    """Paths under `root`, hidden ones (a part starting with '.') and the real folders `left_out` left out, in sorted
    order. Links to folders are followed, as `glob`'s `**` and LlamaIndex's directory reader do (a folder of links to
    other folders is common); each real folder is walked once, so a link to a folder above it ends instead of
    looping."""
    found: list[Path] = []
    walked: set[str] = set(left_out)
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            subfolders[:] = []
            continue
        walked.add(real)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(Path(folder) / name for name in names if not name.startswith("."))
    return sorted(found)


def _source_file(path: Path, root_key: str, legacy_key: str) -> SourceFile:
    stat = path.stat()
    return SourceFile(
        path=path, key=printable_path(path.as_posix()), root_key=root_key, size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        legacy_key=legacy_key,
    )  # fmt: skip


def file_hash(path: Path) -> str:
    """sha256 of the file's bytes, read in blocks (bounded memory for any size)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_documents(source: SourceFile) -> Iterator[Document]:
    """Yield the documents in one file. Raises `SkippedFile` for binary, undecodable or empty files and
    `InputError` for a malformed JSONL line (with file and line number)."""
    suffix = source.suffix
    if suffix == ".jsonl":
        yield from _read_beir_jsonl(source)
    elif suffix == ".pdf":
        yield _read_pdf(source)
    elif suffix in HTML_SUFFIXES:
        yield _read_html(source)
    else:
        yield _read_text(source)


def _decode_or_skip(data: bytes, partial: bool = False) -> str:
    """Decode UTF-8 (a leading byte-order mark dropped) or UTF-16 with its byte-order mark (Windows Notepad's
    "Unicode"), or raise `SkippedFile`; `partial` (the sniffed head of a large file) tolerates a character cut at
    the end."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        if partial:  # a large file is streamed as UTF-8
            raise SkippedFile("UTF-16 text over 8 MB; re-save it as UTF-8, e.g. `iconv -f utf-16 -t utf-8`")
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise SkippedFile(f"not valid UTF-16 text (byte {exc.start}); re-save it as UTF-8") from exc
    if b"\x00" in data[:8192]:
        raise SkippedFile("binary content")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        if partial and exc.start >= len(data) - bom - 4:
            return data[bom : bom + exc.start].decode("utf-8")
        position = bom + exc.start
        line = data.count(b"\n", 0, position) + 1
        raise SkippedFile(
            f"not UTF-8 text (line {line}, byte {position}); re-save it as UTF-8, e.g. `iconv -f cp1252 -t utf-8`"
        ) from exc


def _file_metadata(source: SourceFile) -> dict[str, Any]:
    return {"format": source.suffix.lstrip("."), "path": source.key}


def _read_text(source: SourceFile) -> Document:
    if source.size > STREAM_THRESHOLD_BYTES:
        with source.path.open("rb") as handle:
            head = _decode_or_skip(handle.read(_SNIFF_BYTES), partial=True)
        if not head.strip():
            raise SkippedFile("empty")
        title = _markdown_title(head) if source.suffix != ".txt" else ""
        return Document(
            id=source.key,
            title=title or source.stem,
            text="",
            source=source.key,
            metadata=_file_metadata(source),
            stream_path=source.path,
        )
    text = _decode_or_skip(source.path.read_bytes())
    if not text.strip():
        raise SkippedFile("empty")
    title = _markdown_title(text) if source.suffix != ".txt" else ""
    return Document(
        id=source.key, title=title or source.stem, text=text, source=source.key, metadata=_file_metadata(source)
    )


_MD_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _markdown_title(text: str) -> str:
    match = _MD_HEADING.search(text[:20000])
    return match.group(1).strip() if match else ""


_HTML_DROP = ("script", "style", "noscript", "template", "svg", "head", "iframe", "object")
_HTML_BLOCKS = (
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "li", "ul", "ol", "table", "tr",
    "blockquote", "pre", "figure", "figcaption", "dd", "dt", "br", "hr", "form",
)  # fmt: skip


def _read_html(source: SourceFile) -> Document:
    try:
        from bs4 import BeautifulSoup
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise InputError("reading HTML needs beautifulsoup4: pip install beautifulsoup4") from exc
    raw = _decode_html(source.path.read_bytes())
    soup = BeautifulSoup(raw, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.insert_before("\n\n" + "#" * level + " ")
            heading.insert_after("\n\n")
    for tag in soup.find_all(_HTML_BLOCKS):
        tag.insert_after("\n\n")
    paragraphs = (" ".join(block.split()) for block in re.split(r"\n\s*\n", soup.get_text()))
    text = "\n\n".join(p for p in paragraphs if p)
    if not text:
        raise SkippedFile("empty (no visible text)")
    return Document(
        id=source.key,
        title=title or _markdown_title(text) or source.stem,
        text=text,
        source=source.key,
        metadata=_file_metadata(source),
    )


def _decode_html(data: bytes) -> str:
    """UTF-8, else the charset the page declares (`<meta charset>` or its http-equiv form, as a browser reads it):
    pages saved from older sites are often windows-1252 or ISO-8859-1. A page that is not UTF-8 and declares nothing
    is skipped, as a text file would be: guessing could index wrong characters without a word."""
    try:
        return _decode_or_skip(data)
    except SkippedFile as not_utf8:
        from bs4.dammit import EncodingDetector

        declared = EncodingDetector.find_declared_encoding(data, is_html=True)
        if not declared or declared.replace("-", "").lower() == "utf8":
            raise
        try:
            return data.decode(declared)
        except (LookupError, UnicodeDecodeError):
            raise not_utf8 from None


def _read_pdf(source: SourceFile) -> Document:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:
        raise missing_dependency("pypdf", "'ragtune[pdf]'  (reads PDF files)") from exc
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its repair notes ("EOF marker not found"): the skip says it
    try:
        reader = PdfReader(str(source.path))
        if reader.is_encrypted:
            raise SkippedFile("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        info_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise SkippedFile(f"unreadable PDF ({exc})") from exc
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise SkippedFile("PDF has no text layer (scanned? run OCR first)")
    metadata = _file_metadata(source) | {"pages": len(pages)}
    return Document(
        id=source.key, title=str(info_title).strip() or source.stem, text=text, source=source.key, metadata=metadata
    )


def _read_beir_jsonl(source: SourceFile) -> Iterator[Document]:
    """BEIR corpus lines: {"_id", "title", "text", "metadata"?}. A malformed line stops the run with its number."""
    with source.path.open("rb") as handle:
        if b"\x00" in handle.read(8192):
            raise SkippedFile("binary content")
    seen_any = False
    for number, record in iter_json_objects(source.path, "'_id' and 'text'"):
        doc_id = record.get("_id", record.get("id"))
        if doc_id is None or str(doc_id).strip() == "":
            raise InputError(f"{source.key}:{number}: missing '_id'; every BEIR corpus line needs an id")
        text = record.get("text")
        if not isinstance(text, str):
            raise InputError(f"{source.key}:{number}: missing or non-string 'text' for document '{doc_id}'")
        title = record.get("title") or ""
        metadata = {k: v for k, v in record.items() if k not in ("_id", "id", "title", "text", "metadata")}
        if isinstance(record.get("metadata"), dict):
            metadata |= record["metadata"]
        seen_any = True
        if not (title.strip() or text.strip()):
            continue
        yield Document(id=str(doc_id), title=str(title), text=text, source=source.key, metadata=metadata)
    if not seen_any:
        raise SkippedFile("empty")
