#!/usr/bin/env bash
# The main job: set up, index the shipped SciFact corpus into stores/scifact, and search it three ways.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup-env.sh"
cd "$root"
ragtune index data/scifact/corpus.jsonl --store stores/scifact
ragtune info --store stores/scifact
for mode in bm25 dense hybrid; do
  ragtune search "Vitamin D deficiency increases the risk of multiple sclerosis" --store stores/scifact --mode "$mode" --k 3
done
ragtune search "how do cells repair broken DNA" --store stores/scifact --mode hybrid --k 3
echo "next: ragtune index ~/your-docs --store stores/mine && ragtune search 'your question' --store stores/mine"
