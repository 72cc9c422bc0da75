"""Run a command and sample the resident memory of its whole process tree every second.

    python bench/rss_timeline.py OUT.tsv -- ragtune quickstart --out /tmp/qs

Writes `seconds<TAB>rss_mib<TAB>last output line` rows to OUT.tsv and prints the peak at the end, so the step that
needs the memory is visible (the command's own output is passed through).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path


def tree_rss_mib(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, in MiB (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        proc = int(status.parent.name)
        children.setdefault(int(fields["PPid"]), []).append(proc)
        rss[proc] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [pid]
    while stack:
        proc = stack.pop()
        total += rss.get(proc, 0)
        stack.extend(children.get(proc, []))
    return total / 1024


def main() -> int:
    out = Path(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1 :]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    last = [""]

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                last[0] = line.strip()[:120]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    peak = (0.0, "")
    with out.open("w") as log:
        while process.poll() is None:
            rss = tree_rss_mib(process.pid)
            if rss > peak[0]:
                peak = (rss, last[0])
            log.write(f"{time.monotonic() - started:.0f}\t{rss:.0f}\t{last[0]}\n")
            log.flush()
            time.sleep(1.0)
    reader.join(timeout=5)
    print(f"peak RSS {peak[0]:.0f} MiB during: {peak[1]} · exit {process.returncode} · {time.monotonic() - started:.0f} s")
    return process.returncode


if __name__ == "__main__":
    raise SystemExit(main())
