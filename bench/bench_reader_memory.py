"""Peak memory of reading and chunking one large text file with no newline (the streaming reader's worst case).

    python bench/bench_reader_memory.py --mb 30

Writes a single-line file of that size, then reads and chunks it for MiniLM's window in a fresh process and prints
passages, seconds and the peak RSS (ru_maxrss). Encoding is left out: it needs the same memory whatever the file.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = """
import sys
def peak_mib():  # VmHWM, unlike ru_maxrss, starts afresh at exec (ru_maxrss keeps the forking parent's)
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) // 1024
from ragtune.corpus import Chunker, ChunkingConfig, read_documents
from ragtune.corpus.readers import discover_sources
from ragtune.models import resolve_model
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("minilm").path))
files = discover_sources([sys.argv[1]]).files
chunker = Chunker(tokenizer, ChunkingConfig().resolve(256, 2))
passages = sum(1 for document in read_documents(files[0]) for _ in chunker.chunk(document))
print(passages, peak_mib())
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=30.0)
    args = parser.parse_args()
    rng = random.Random(0)
    words = [f"w{rng.randint(0, 50_000)}" for _ in range(100_000)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one-line.txt"
        with path.open("w") as handle:
            while handle.tell() < args.mb * 1024 * 1024:
                handle.write(" ".join(words) + " ")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHUNK, str(path)], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(f"failed (exit {done.returncode}) after {seconds:.0f} s: {done.stderr[-1500:]}")
            return
        passages, peak = map(int, done.stdout.split())
        print(f"{path.stat().st_size / 1e6:.1f} MB, one line: {passages} passages in {seconds:.0f} s, peak RSS {peak} MiB")


if __name__ == "__main__":
    main()
