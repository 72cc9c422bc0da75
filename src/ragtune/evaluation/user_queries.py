"""The user's own questions, with the documents that answer them, resolved against a store's passages."""

from __future__ import annotations

from pathlib import Path

from ragtune.errors import InputError
from ragtune.jsonl import iter_json_objects
from ragtune.store import StoreReader


def read_user_queries(path: Path, store: StoreReader, docs: Path) -> list[tuple[str, list[str]]]:
    """`{"query", "relevant": [...]}` lines → (question, passage ids). A relevant entry is a passage id, a document
    id, or a file path (absolute or relative to `docs`), which stands for every passage of that document; nDCG is
    then scored over passages. Each line needs at least one relevant entry the store knows."""
    known = {p.id: p.doc_id for p in store.iter_passages()}
    passages_of: dict[str, list[str]] = {}
    for pid, doc_id in known.items():
        passages_of.setdefault(doc_id, []).append(pid)
    found: list[tuple[str, list[str]]] = []
    for number, record in iter_json_objects(path, "'query' and 'relevant'"):
        query = record.get("query", record.get("text"))
        relevant = record.get("relevant")
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"{path}:{number}: needs a non-empty 'query'")
        if not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) for r in relevant):
            raise InputError(f"{path}:{number}: needs 'relevant': a list of the documents that answer the question "
                             "(document or passage ids, or file paths): without them a question cannot grade a system")  # fmt: skip
        passages: list[str] = []
        for entry in relevant:
            as_path = str((docs / entry).resolve())  # an absolute entry replaces `docs` in the join
            if entry in known:
                passages.append(entry)
            elif entry in passages_of or as_path in passages_of:
                passages += passages_of.get(entry) or passages_of[as_path]
            else:
                raise InputError(f"{path}:{number}: '{entry}' is no passage id, document id or file of '{docs}'")
        found.append((query.strip(), list(dict.fromkeys(passages))))
    if not found:
        raise InputError(f"{path} holds no questions")
    return found
