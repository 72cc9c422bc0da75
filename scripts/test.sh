#!/usr/bin/env bash
# Set up (or reuse) the environment and run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup-env.sh"
# The browser test drives Debian's Chromium through chromedriver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium and chromium-driver for the browser test" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "error: the browser test needs chromium and chromedriver; install Debian's chromium and chromium-driver" >&2
    exit 1
  fi
fi
cd "$root"
# Two workers, each taking whole test files (module fixtures such as a trained model or a started server are built
# once per file); each worker computes on its share of the cores (tests/conftest.py). On 2 cores the suite took
# 10.5 min this way (2026-12-04). RAGTUNE_TEST_WORKERS=0: one process.
exec python -m pytest -q -n "${RAGTUNE_TEST_WORKERS:-2}" --dist loadfile "$@"
