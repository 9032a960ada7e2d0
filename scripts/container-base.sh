#!/usr/bin/env bash
# Make the `debian:bookworm` base image when it is missing and no registry is reachable:
# debootstrap a minimal bookworm from the Debian mirror apt is configured with, then
# `podman import` it.  Does nothing when the image already exists.
#   scripts/container-base.sh            (root: debootstrap needs it)
# Env: CONTAINERS_CONF (default: deploy/containers.conf), BASE_IMAGE (default debian:bookworm),
#      DEBIAN_MIRROR (default: the first bookworm URI in /etc/apt/sources.list[.d]).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/containers.conf}"
BASE_IMAGE="${BASE_IMAGE:-debian:bookworm}"

if podman image exists "$BASE_IMAGE"; then
  echo "container-base: $BASE_IMAGE present"
  exit 0
fi

# The mirror: a deb822 `URIs:` line of a stanza naming bookworm, or a one-line `deb` entry.
mirror_from_apt() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ {u=$2} /^Suites:/ && /(^| )bookworm( |$)/ && u ~ /debian\/?$/ {print u; exit}
         /^$/ {u=""}' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1=="deb" && $3=="bookworm" {print $2; exit}' "$f"
  done
}
MIRROR="${DEBIAN_MIRROR:-$(mirror_from_apt | head -n1)}"
[ -n "$MIRROR" ] || { echo "container-base: no bookworm mirror in apt's sources" >&2; exit 1; }

command -v debootstrap >/dev/null || { echo "container-base: debootstrap missing (make deps)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "container-base: debootstrap needs root" >&2; exit 1; }

WORK="$(mktemp -d /var/tmp/cvtasks-base.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
echo "container-base: debootstrap bookworm from $MIRROR"
debootstrap --variant=minbase bookworm "$WORK/root" "$MIRROR"
# The image's apt talks to the same mirror (the security suite too when apt's sources have it).
SECURITY="$(awk '/^URIs:/ && /debian-security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
{
  echo "deb $MIRROR bookworm main"
  echo "deb $MIRROR bookworm-updates main"
  [ -z "$SECURITY" ] || echo "deb $SECURITY bookworm-security main"
} > "$WORK/root/etc/apt/sources.list"
# As in Debian's official images: apt keeps no downloaded packages in an image layer.
cat > "$WORK/root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
rm -rf "$WORK/root/var/cache/apt/archives/"*.deb "$WORK/root/var/cache/apt/"*.bin "$WORK/root/var/lib/apt/lists/"*
tar -C "$WORK/root" --numeric-owner -c . \
  | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE"
podman image exists "$BASE_IMAGE"
echo "container-base: imported $BASE_IMAGE"
