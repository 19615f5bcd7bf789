#!/usr/bin/env bash
# Builds one kernel image from its recipe (images/NAME/recipe.env) with debootstrap + docker import.
# Idempotent: does nothing when the image with the recipe's digest label already exists.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
recipe_dir="$here/images/$1"
[[ -f "$recipe_dir/recipe.env" ]] || { echo "no such image recipe: $1" >&2; exit 2; }
# shellcheck disable=SC1091
source "$recipe_dir/recipe.env"
digest=$(sha256sum "$recipe_dir/recipe.env" "$here/scripts/build-image.sh" | sha256sum | cut -c1-16)
ref="$NAME:$TAG"
if [[ "$(docker image inspect -f '{{index .Config.Labels "ai.backend.recipe-digest"}}' "$ref" 2>/dev/null)" == "$digest" ]]; then
  echo "image $ref is up to date"
  exit 0
fi
# Use the Debian mirror apt already uses (only enabled *.sources / *.list files).
mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
  | grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' || true) \
  | awk '{print $2}' | grep -v security | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
cache=${BAI_IMAGE_CACHE:-/var/cache/backend.ai/images}
mkdir -p "$cache"
rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
echo "[build-image] debootstrap $ref from $mirror (about a minute)..."
include=$(echo "$PACKAGES" | tr ' ' ',')
debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$mirror" >"$cache/$NAME.debootstrap.log" 2>&1 \
  || { tail -n 20 "$cache/$NAME.debootstrap.log" >&2; exit 1; }
# The unprivileged user every kernel runs as (uid/gid 1000, the "work" user of the spec).
chroot "$rootfs" /usr/sbin/groupadd -g 1000 work
chroot "$rootfs" /usr/sbin/useradd -u 1000 -g 1000 -m -d /home/work -s /bin/bash work
mkdir -p "$rootfs/opt/backend.ai" "$rootfs/run/backend.ai"
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
changes=(--change "LABEL ai.backend.recipe-digest=$digest" --change "USER work" --change "WORKDIR /home/work"
         --change "ENV LANG=C.UTF-8 HOME=/home/work SHELL=/bin/bash USER=work TERM=xterm")
while IFS= read -r label; do
  [[ -n "$label" ]] && changes+=(--change "LABEL ${label%%=*}=\"${label#*=}\"")
done <<<"$LABELS"
echo "[build-image] importing $ref..."
tar -C "$rootfs" -c . | docker import "${changes[@]}" - "$ref" >/dev/null
docker tag "$ref" "$NAME:latest"
echo "[build-image] built $ref"
