#!/usr/bin/env bash
# Runs the whole suite: lint, type check, unit, integration (real Docker) and compatibility tests (the
# official clients against a real cluster). With arguments, runs pytest with them instead of the suite.
#
# The integration tests and the rest (unit + compatibility) run as two pytest processes at once: most of
# their time is spent waiting on containers and servers, and every test cluster has its own ports, state
# directory, database and Redis database, so they do not meet.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider)
if (($#)); then
  exec "${PYTEST[@]}" "$@"
fi
echo "[test] ruff" >&2
.venv/bin/ruff check src tests benchmarks
echo "[test] mypy" >&2
.venv/bin/mypy src
echo "[test] pytest: tests/integration, and tests/unit + tests/compat alongside" >&2
log=$(mktemp /tmp/bai-tests-XXXXXX.log)
ilog=$(mktemp /tmp/bai-tests-XXXXXX.log)
trap 'rm -f "$log" "$ilog"' EXIT
start=$SECONDS
"${PYTEST[@]}" tests/unit tests/compat >"$log" 2>&1 &
other=$!
rc=0
"${PYTEST[@]}" tests/integration 2>&1 | tee "$ilog" || rc=$?
other_rc=0
wait "$other" || other_rc=$?
echo "[test] tests/unit + tests/compat (exit $other_rc):" >&2
cat "$log"
echo "[test] pytest took $((SECONDS - start)) s" >&2
# One closing line for both runs (pytest's summary is the last line of each).
passed=$(tail -n 3 "$ilog" "$log" | grep -Eo "[0-9]+ passed" | awk '{n += $1} END {print n + 0}')
failed=$(tail -n 3 "$ilog" "$log" | grep -Eo "[0-9]+ (failed|error|errors)" | awk '{n += $1} END {print n + 0}')
skipped=$(tail -n 3 "$ilog" "$log" | grep -Eo "[0-9]+ skipped" | awk '{n += $1} END {print n + 0}')
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
if ((rc != 0 || other_rc != 0)); then
  exit 1
fi
