#!/usr/bin/env bash
# Installs the unmodified official Backend.AI clients from PyPI, each into a virtualenv of its own,
# for the compatibility suite (tests/compat). Idempotent: a venv whose pinned set is unchanged is kept.
#   22.03: backend.ai-client 22.3.2 + backend.ai-cli 0.6.x     19.09: backend.ai-client 19.9.10
# Where: $BACKEND_COMPAT_VENVS (default ~/.cache/backend.ai-compat), outside the checkout so that a
# fresh clone (CI) reuses them. Each client is installed with --no-deps and then its dependencies,
# pinned: a newer yarl makes both clients hang.
set -euo pipefail
root=${BACKEND_COMPAT_VENVS:-$HOME/.cache/backend.ai-compat}
PY=${PYTHON:-python3}
say() { echo "[official-clients] $*" >&2; }

install() {  # install NAME "CLIENT PACKAGES" "DEPENDENCIES"
  local name=$1 pkgs=$2 deps=$3 dir="$root/$1"
  local stamp; stamp=$(echo "$pkgs|$deps" | sha256sum | cut -c1-16)
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" && -x "$dir/bin/backend.ai" ]]; then
    return 0
  fi
  say "installing the official $name client into $dir"
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  # shellcheck disable=SC2086
  "$dir/bin/pip" install -q --no-deps $pkgs
  # shellcheck disable=SC2086
  "$dir/bin/pip" install -q --no-warn-conflicts $deps
  echo "$stamp" >"$dir/.stamp"
}

mkdir -p "$root"
install 22.03 "backend.ai-client==22.3.2 backend.ai-cli~=0.6.0" \
  "aiohttp~=3.8.6 aiotusclient appdirs async-timeout>=4.0 attrs click colorama humanize janus multidict python-dateutil PyYAML>=6 rich~=12.2 tabulate tqdm yarl<1.17"
install 19.09 "backend.ai-client==19.9.10" \
  "aiohttp~=3.8.6 appdirs async-timeout attrs click~=7.1 humanize multidict python-dateutil tabulate tqdm yarl<1.17"
echo "$root"
