"""Index a folder of small files (the first N SciFact abstracts as .txt files) into a new store with an empty
embedding cache: how long, and how much of it encoding.

Usage: python bench/bench_ingest_files.py [N] [BATCH]   (defaults 1000, 512 passages per encoding batch)
Run it with PYTHONPATH pointing at an older checkout's src/ to time that code the same way (BATCH is then ignored:
before 2026-12-02 the pipeline encoded after every file).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    root = Path(tempfile.mkdtemp(prefix="ragtune-files-"))
    docs = root / "docs"
    docs.mkdir()
    with open("../shared/data/scifact/corpus.jsonl", encoding="utf-8") as corpus:
        for i, line in enumerate(corpus):
            if i >= count:
                break
            record = json.loads(line)
            (docs / f"{record['_id']}.txt").write_text(record["title"] + "\n\n" + record["text"], encoding="utf-8")
    os.environ["RAGTUNE_EMBEDDING_CACHE"] = str(root / "cache.sqlite")  # empty: every passage is encoded
    from ragtune.store import index_sources

    try:
        from ragtune.store import ingest
    except ImportError:  # an older checkout: no shared ingest module, batches per file
        batch = 0
    else:
        from ragtune.embedding import Embedder

        ingest.EMBED_BATCH = batch  # checkouts before `texts_per_call`
        if hasattr(Embedder, "texts_per_call"):
            Embedder.texts_per_call = batch
    started = time.perf_counter()
    report = index_sources(root / "store", [docs], show_progress=False)
    print(json.dumps({"files": count, "batch": batch, "seconds": round(time.perf_counter() - started, 1),
                      "encode_seconds": round(report.encode_seconds, 1), "passages": report.passages_total}))


if __name__ == "__main__":
    main()
