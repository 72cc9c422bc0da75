#!/usr/bin/env bash
# The main job: set up, then run the whole loop on the shipped SciFact data (index → baseline → training data →
# fine-tune → re-index → evaluate → answer) and write quickstart/report.html. Run it again to resume after Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup-env.sh"
cd "$root"
ragtune quickstart --out quickstart "$@"
