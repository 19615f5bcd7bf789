#!/usr/bin/env bash
# Builds kernel images from their recipes (images/NAME/recipe.env: NAME, TAG, PACKAGES, LABELS[, ALIASES,
# ROOT_SETUP, SETUP]; optional images/NAME/service-defs/*.json go to /etc/backend.ai/service-defs/).
#   scripts/build-image.sh NAME...   build these recipes, e.g. `python c`
#   scripts/build-image.sh --all     build every recipe under images/
# Idempotent: an image whose ai.backend.recipe-digest label matches its recipe (and this script) is skipped.
#
# How: a base root filesystem (debootstrap minbase + python3 for the kernel runner + the `work` user) is
# made once and kept as a tarball in $BAI_IMAGE_CACHE (default /var/cache/backend.ai/images), keyed by a
# digest of what goes into it, and imported as the Docker image backendai-base:<digest>.  Each kernel image
# is that base plus its recipe's packages, installed with apt-get in a throw-away container on the host
# network and committed with the recipe's labels, so all images share the base layer.  Package lists,
# downloaded .debs and pip's cache are kept next to the tarball: a rebuild after a recipe change downloads only
# what is new.  The base layer holds the intrinsic apps of every kernel (ADR 0012): dropbear with OpenSSH's
# sftp-server (sshd), tmux and xterm.js (the runner's web terminal, ttyd).
# Every image is tagged NAME:TAG and NAME:latest (the manager then aliases NAME and NAME:latest to NAME:TAG).
# Environment: BAI_IMAGE_CACHE (cache dir), BAI_IMAGE_RECIPES (recipe dir, default images/ of this repo),
# BAI_IMAGE_MIRROR (Debian mirror; default: the one apt uses here, else deb.debian.org),
# BAI_IMAGE_CA_BUNDLE (the CA certificates pip trusts during ROOT_SETUP; default: this host's bundle, so that
# a TLS-intercepting proxy trusted here is trusted there too; it is mounted, never part of an image).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
recipes=${BAI_IMAGE_RECIPES:-$here/images}
cache=${BAI_IMAGE_CACHE:-/var/cache/backend.ai/images}
suite=bookworm
# What every image has: python3 runs the kernel runner; ca-certificates for user-level downloads (pip --user);
# the intrinsic apps: dropbear-bin (sshd; it execs /usr/lib/sftp-server, which openssh-sftp-server ships) and
# tmux (every web-terminal tab attaches to one tmux session).
base_packages="python3 ca-certificates tmux dropbear-bin openssh-sftp-server"
# Taken from the next Debian release: bookworm's libjs-xterm 3.8.1 ships a 288-byte CommonJS stub as
# xterm.js (it `require`s modules it does not contain), useless in a browser; trixie's (5.3.0, no
# dependencies, architecture all) is the real browser bundle with its addons (fit among them).
next_suite=trixie
next_packages="libjs-xterm"
base_rev=4  # bump when the base recipe below changes
t0=$SECONDS

say() { echo "[build-image] $*" >&2; }
die() { say "$*"; exit 1; }

names=()
for arg in "$@"; do
  if [[ "$arg" == --all ]]; then
    for d in "$recipes"/*/; do [[ -f "$d/recipe.env" ]] && names+=("$(basename "$d")"); done
  elif [[ "$arg" == -* ]]; then
    echo "usage: $0 NAME... | --all" >&2; exit 2
  else
    names+=("$arg")
  fi
done
((${#names[@]})) || { echo "usage: $0 NAME... | --all" >&2; exit 2; }
for n in "${names[@]}"; do
  [[ "$n" =~ ^[a-z0-9][a-z0-9._-]*$ && -f "$recipes/$n/recipe.env" ]] || { echo "no such image recipe: $n" >&2; exit 2; }
done
command -v docker >/dev/null || die "docker is not installed"
mkdir -p "$cache"

# One build at a time per cache (the base tarball and the .deb cache are shared).
exec 9>"$cache/.build.lock"
if ! flock -n 9; then
  say "waiting for another image build to finish..."
  flock 9
fi

# The Debian mirror apt already uses (only enabled *.sources / *.list files), else deb.debian.org.
mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
  | grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' || true) \
  | awk '{print $2}' | grep -v security | head -n1 || true)
mirror=${BAI_IMAGE_MIRROR:-${mirror:-http://deb.debian.org/debian}}
base_key=$(printf '%s\n' "$suite" "$mirror" "$base_packages" "$next_suite" "$next_packages" "$base_rev" \
  | sha256sum | cut -c1-12)
base_tar="$cache/base-$suite-$base_key.tar"
base_ref="backendai-base:$suite-$base_key"
debs="$cache/debs"
lists="$cache/lists-$suite-$base_key"
pip_cache="$cache/pip"
mkdir -p "$debs/partial" "$lists/partial" "$pip_cache"
ca_bundle=${BAI_IMAGE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

elapsed() { echo "$((SECONDS - t0))s"; }

# An interrupted build leaves no build container or temp dir behind.
cid="" setup_dir=""
cleanup() {
  [[ -n "$cid" ]] && docker rm -f "$cid" >/dev/null 2>&1
  [[ -n "$setup_dir" ]] && rm -rf "$setup_dir"
  return 0
}
trap cleanup EXIT

make_base_tar() {
  local root
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  say "base: debootstrap $suite ($base_packages) from $mirror (about a minute)..."
  local log="$cache/base.debootstrap.log"
  debootstrap --variant=minbase --include="${base_packages// /,}" --cache-dir="$debs" \
    "$suite" "$root" "$mirror" >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "base: debootstrap failed (log: $log)"; }
  # The unprivileged user every kernel runs as (uid/gid 1000, the "work" user of the spec).
  chroot "$root" /usr/sbin/groupadd -g 1000 work
  chroot "$root" /usr/sbin/useradd -u 1000 -g 1000 -m -d /home/work -s /bin/bash work
  # Dropbear refuses public keys when ~ or ~/.ssh is writable by group or others.
  chmod 755 "$root/home/work"
  # The packages of the next release, with apt pointed at that suite alone (nothing else comes from it, and
  # the image's sources stay bookworm only).
  say "base: $next_packages from $next_suite"
  local next_opts=(-q -o "Dir::Etc::SourceList=/tmp/next.list" -o "Dir::Etc::SourceParts=/nonexistent"
    -o "Dir::State::Lists=/tmp/next-lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
  mkdir -p "$root/tmp/next-lists/partial"
  echo "deb $mirror $next_suite main" >"$root/tmp/next.list"
  { chroot "$root" apt-get "${next_opts[@]}" update &&
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get "${next_opts[@]}" -y install --no-install-recommends \
      $next_packages; } >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "base: installing $next_packages failed (log: $log)"; }
  rm -rf "$root/tmp/next.list" "$root/tmp/next-lists"
  # What the intrinsic apps rely on, checked here rather than found missing in a running kernel.
  local need
  for need in usr/sbin/dropbear usr/bin/dropbearkey usr/bin/dropbearconvert usr/lib/sftp-server usr/bin/tmux \
    usr/share/javascript/xterm/xterm.js usr/share/javascript/xterm/xterm.css \
    usr/share/javascript/xterm/addons/fit/xterm-addon-fit.js; do
    [[ -e "$root/$need" ]] || die "base: /$need is missing"
  done
  (($(stat -c %s "$root/usr/share/javascript/xterm/xterm.js") > 100000)) || die "base: xterm.js is not a browser bundle"
  mkdir -p "$root/opt/backend.ai" "$root/run/backend.ai"
  # No manuals or docs in kernel images (copyright files stay); no daemons started by package scripts.
  # (glibc has C.UTF-8 built in, so message translations can go too.)
  printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' \
    >"$root/etc/dpkg/dpkg.cfg.d/01-backendai-nodoc"
  find "$root/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$root/usr/share/man"/* "$root/usr/share/info"/* "$root/usr/share/locale"/*
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
  echo "deb $mirror $suite main" >"$root/etc/apt/sources.list"
  # Lists and .debs live in the cache (mounted while building), never in an image layer.
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* "$root/etc/resolv.conf"
  tar -C "$root" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
  # Bases of earlier base recipes are not needed any more (images built on them keep their layers).
  find "$cache" -maxdepth 1 \( -name "base-*.tar" -o -name "lists-*" \) ! -name "$(basename "$base_tar")" \
    ! -name "$(basename "$lists")" -exec rm -rf {} +
}

ensure_base() {
  [[ -n "${base_ready:-}" ]] && return 0
  if ! docker image inspect "$base_ref" >/dev/null 2>&1; then
    [[ -f "$base_tar" ]] || make_base_tar
    say "base: importing $base_ref ($(elapsed))"
    docker import --change "ENV LANG=C.UTF-8" "$base_tar" "$base_ref" >/dev/null
  fi
  base_ready=1
}

build_one() {
  local name=$1 recipe_dir="$recipes/$1" NAME TAG PACKAGES LABELS ALIASES="" ROOT_SETUP="" SETUP="" digest ref log
  # shellcheck disable=SC1091
  source "$recipe_dir/recipe.env"
  [[ -n "${NAME:-}" && -n "${TAG:-}" ]] || die "$name: recipe.env must set NAME and TAG"
  # Every file of the recipe (recipe.env, service-defs/...), by name and content, this script and the base.
  digest=$( (cd "$recipe_dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum
    sha256sum <"$here/scripts/build-image.sh"; echo "$base_key") | sha256sum | cut -c1-16)
  ref="$NAME:$TAG"
  if [[ "$(docker image inspect -f '{{index .Config.Labels "ai.backend.recipe-digest"}}' "$ref" 2>/dev/null)" == "$digest" ]]; then
    docker tag "$ref" "$NAME:latest"
    say "$ref is up to date"
    return 0
  fi
  ensure_base
  log="$cache/$NAME.build.log"
  cid="bai-build-$NAME-$$"
  say "$ref: installing ${PACKAGES:-nothing} ($(elapsed))"
  docker rm -f "$cid" >/dev/null 2>&1 || true
  # After the packages, the recipe's optional ROOT_SETUP runs as root (pip's cache mounted, the CA bundle
  # trusted), its service-defs/*.json are copied, and its optional SETUP runs as the work user (e.g. to warm
  # a cache in /home/work).
  setup_dir=$(mktemp -d)
  printf '%s\n' "$ROOT_SETUP" >"$setup_dir/root-setup.sh"
  printf '%s\n' "$SETUP" >"$setup_dir/setup.sh"
  chmod 755 "$setup_dir" && chmod 644 "$setup_dir/setup.sh" "$setup_dir/root-setup.sh"
  local mounts=(-v "$setup_dir:/mnt/setup:ro" -v "$recipe_dir:/mnt/recipe:ro" -v "$pip_cache:/root/.cache/pip"
    -v "$debs:/var/cache/apt/archives" -v "$lists:/var/lib/apt/lists") ca_env=""
  if [[ -f "$ca_bundle" ]]; then
    mounts+=(-v "$ca_bundle:/mnt/ca.crt:ro")
    ca_env="PIP_CERT=/mnt/ca.crt SSL_CERT_FILE=/mnt/ca.crt REQUESTS_CA_BUNDLE=/mnt/ca.crt"
  fi
  # The packages are installed as root on the host network; the mounts are not part of the commit (nor is
  # anything exported in the shell: only `docker run -e` would be).  pip's cache is a mount under
  # /root/.cache, so the final clean-up spares it.
  if ! docker run --name "$cid" --user 0:0 --network host "${mounts[@]}" "$base_ref" \
      /bin/sh -c "export DEBIAN_FRONTEND=noninteractive; apt-get -q update && \
        apt-get -q -y install --no-install-recommends ${PACKAGES:-} && \
        (cd /root && env HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off $ca_env \
          /bin/sh -e /mnt/setup/root-setup.sh) && \
        if [ -d /mnt/recipe/service-defs ]; then mkdir -p /etc/backend.ai/service-defs && \
          for f in /mnt/recipe/service-defs/*.json; do [ ! -e \"\$f\" ] || \
            install -m 644 \"\$f\" /etc/backend.ai/service-defs/ || exit 1; done; fi && \
        (cd /home/work && HOME=/home/work runuser -u work -- /bin/sh -e /mnt/setup/setup.sh) && \
        find /root/.cache -mindepth 1 -maxdepth 1 ! -name pip -exec rm -rf {} + && \
        rm -rf /tmp/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old" \
      >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "FAILED to build $ref: installing the packages or a setup step failed (log: $log)"
  fi
  rm -rf "$setup_dir"
  setup_dir=""
  local changes=(--change "LABEL ai.backend.recipe-digest=$digest" --change "USER work"
    --change "WORKDIR /home/work" --change 'CMD ["/bin/bash"]'
    --change "ENV LANG=C.UTF-8 HOME=/home/work SHELL=/bin/bash USER=work TERM=xterm")
  local label
  while IFS= read -r label; do
    [[ -n "$label" ]] && changes+=(--change "LABEL ${label%%=*}=\"${label#*=}\"")
  done <<<"$LABELS"
  [[ -n "$ALIASES" ]] && changes+=(--change "LABEL ai.backend.aliases=\"$ALIASES\"")
  say "$ref: committing ($(elapsed))"
  local previous
  previous=$(docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)
  docker commit "${changes[@]}" "$cid" "$ref" >/dev/null || die "FAILED to build $ref: docker commit failed"
  docker rm -f "$cid" >/dev/null
  cid=""
  docker tag "$ref" "$NAME:latest"
  # The image this one replaces, unless a container still uses it or another tag names it.
  [[ -n "$previous" ]] && docker rmi "$previous" >/dev/null 2>&1 || true
  say "built $ref (and $NAME:latest), $(docker image inspect -f '{{.Size}}' "$ref" | awk '{printf "%d MB", $1/1e6}') ($(elapsed))"
}

for n in "${names[@]}"; do
  build_one "$n"
done
