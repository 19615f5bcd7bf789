#!/usr/bin/env bash
# Sets up everything the project needs on a Debian machine; safe to run again (does only what is missing).
#   scripts/setup.sh          Debian packages, Docker engine, .venv with the project, kernel images
#   scripts/setup.sh --test   the same plus the test tools, and a private PostgreSQL and Redis on loopback
#                             for the tests (scripts/test-services.sh; where: scripts/test-services.env), and the
#                             official 22.03 and 19.09 clients for tests/compat (scripts/official-clients.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"

say() { echo "[setup] $*" >&2; }

# 1. Debian packages
pkgs=(docker.io debootstrap python3-venv ca-certificates iproute2)
# The browser tests of the web console drive Debian's Chromium (headless) through Playwright.
((want_test)) && pkgs+=(chromium)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Docker engine
if ! docker info >/dev/null 2>&1; then
  say "starting the Docker engine"
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    $SUDO systemctl start docker || true
  fi
  if ! docker info >/dev/null 2>&1; then
    $SUDO setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { say "the Docker engine did not start; see /var/log/dockerd.log"; exit 1; }
fi

# 3. Virtualenv with the project installed (reinstalled when pyproject.toml changes)
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-12)
# The stamp holds "test" when the test extras are installed too; that also satisfies a plain setup.
if [[ ! -f "$stamp" ]] || { ((want_test)) && [[ "$(cat "$stamp")" != test ]]; }; then
  say "installing the project into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  if ((want_test)); then
    .venv/bin/pip install -q -e '.[test]'
  else
    .venv/bin/pip install -q -e .
  fi
  rm -f .venv/.installed-*
  if ((want_test)); then echo test >"$stamp"; else echo base >"$stamp"; fi
fi

# 4. The web console's browser libraries (htmx, xterm.js, tus-js-client) from the npm registry
.venv/bin/python scripts/fetch-console-assets.py >&2 || { say "fetching the console's libraries failed"; exit 1; }

# 5. Kernel images
for recipe in images/*/recipe.env; do
  img=$(basename "$(dirname "$recipe")")
  bash scripts/build-image.sh "$img" || { say "building the $img kernel image failed (see above)"; exit 1; }
done

# 6. PostgreSQL and Redis for the tests and benchmarks; the official 22.03 and 19.09 clients (from PyPI,
#    each in a venv of its own under ~/.cache/backend.ai-compat) for the compatibility suite
if ((want_test)); then
  bash scripts/test-services.sh
  bash scripts/official-clients.sh >/dev/null
fi
