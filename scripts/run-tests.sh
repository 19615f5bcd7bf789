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
.venv/bin/ruff format --check src tests benchmarks
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
total() {  # total "N <word>" over the last lines of both logs (awk only: grep without a match would fail)
  tail -q -n 3 "$ilog" "$log" | awk -v pat="$1" '{
    for (i = 2; i <= NF; i++) { w = $i; sub(/[,;]$/, "", w); if (w ~ pat && $(i - 1) ~ /^[0-9]+$/) n += $(i - 1) }
  } END { print n + 0 }'
}
echo "$(total '^passed$') passed, $(total '^(failed|errors?)$') failed, $(total '^skipped$') skipped"
if ((rc != 0 || other_rc != 0)); then
  exit 1
fi
