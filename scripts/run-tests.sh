#!/usr/bin/env bash
# Runs the whole suite: lint, type check, unit and integration tests (real Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[test] ruff" >&2
.venv/bin/ruff check src tests benchmarks
echo "[test] mypy" >&2
.venv/bin/mypy src
echo "[test] pytest" >&2
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
