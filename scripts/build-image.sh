#!/usr/bin/env bash
# Builds kernel images from their recipes (images/NAME/recipe.env: NAME, TAG, PACKAGES, LABELS[, ALIASES, SETUP]).
#   scripts/build-image.sh NAME...   build these recipes, e.g. `python c`
#   scripts/build-image.sh --all     build every recipe under images/
# Idempotent: an image whose ai.backend.recipe-digest label matches its recipe (and this script) is skipped.
#
# How: a base root filesystem (debootstrap minbase + python3 for the kernel runner + the `work` user) is
# made once and kept as a tarball in $BAI_IMAGE_CACHE (default /var/cache/backend.ai/images), keyed by a
# digest of what goes into it, and imported as the Docker image backendai-base:<digest>.  Each kernel image
# is that base plus its recipe's packages, installed with apt-get in a throw-away container on the host
# network and committed with the recipe's labels, so all images share the base layer.  Package lists and
# downloaded .debs are cached next to the tarball: a rebuild after a recipe change downloads only what is new.
# Every image is tagged NAME:TAG and NAME:latest (the manager then aliases NAME and NAME:latest to NAME:TAG).
# Environment: BAI_IMAGE_CACHE (cache dir), BAI_IMAGE_RECIPES (recipe dir, default images/ of this repo),
# BAI_IMAGE_MIRROR (Debian mirror; default: the one apt uses here, else deb.debian.org).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
recipes=${BAI_IMAGE_RECIPES:-$here/images}
cache=${BAI_IMAGE_CACHE:-/var/cache/backend.ai/images}
suite=bookworm
# What every image has: python3 runs the kernel runner; ca-certificates for user-level downloads (pip --user).
base_packages="python3 ca-certificates"
base_rev=3  # bump when the base recipe below changes
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
base_key=$(printf '%s\n' "$suite" "$mirror" "$base_packages" "$base_rev" | sha256sum | cut -c1-12)
base_tar="$cache/base-$suite-$base_key.tar"
base_ref="backendai-base:$suite-$base_key"
debs="$cache/debs"
lists="$cache/lists-$suite-$base_key"
mkdir -p "$debs/partial" "$lists/partial"

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
  local name=$1 recipe_dir="$recipes/$1" NAME TAG PACKAGES LABELS ALIASES="" SETUP="" digest ref log
  # shellcheck disable=SC1091
  source "$recipe_dir/recipe.env"
  [[ -n "${NAME:-}" && -n "${TAG:-}" ]] || die "$name: recipe.env must set NAME and TAG"
  digest=$( (cat "$recipe_dir/recipe.env" "$here/scripts/build-image.sh"; echo "$base_key") | sha256sum | cut -c1-16)
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
  # The recipe's optional SETUP runs afterwards as the work user (e.g. to warm a cache in /home/work).
  setup_dir=$(mktemp -d)
  printf '%s\n' "$SETUP" >"$setup_dir/setup.sh"
  chmod 755 "$setup_dir" && chmod 644 "$setup_dir/setup.sh"
  # The packages are installed as root on the host network; the mounts are not part of the commit.
  if ! docker run --name "$cid" --user 0:0 --network host -v "$setup_dir:/mnt:ro" \
      -v "$debs:/var/cache/apt/archives" -v "$lists:/var/lib/apt/lists" "$base_ref" \
      /bin/sh -c "export DEBIAN_FRONTEND=noninteractive; apt-get -q update && \
        apt-get -q -y install --no-install-recommends ${PACKAGES:-} && \
        (cd /home/work && HOME=/home/work runuser -u work -- /bin/sh -e /mnt/setup.sh) && \
        rm -rf /tmp/* /root/.cache /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old" \
      >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "FAILED to build $ref: installing the packages failed (log: $log)"
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
