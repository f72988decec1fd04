#!/usr/bin/env bash
# Build the Debian package of burst-controller with Debian's own tooling (dpkg-buildpackage, debhelper,
# dh-virtualenv), from a clean copy of the source with deploy/debian/ laid out as debian/: dpkg-buildpackage
# wants debian/ at the top of the tree it builds and writes into it, and the checkout stays as it is.
#
#   deploy/build-deb.sh [--wheels DIR] [--out DIR]
#
#   --wheels DIR  build offline: the dependencies, setuptools and wheel from DIR's wheels only (built with
#                 `pip wheel -w DIR . setuptools wheel` with Debian 12's Python, 3.11); without it pip asks
#                 its package index
#   --out DIR     where the .deb goes (default: the current directory)
#
# Needs: apt-get install debhelper dh-virtualenv python3-venv (scripts/services.sh install does). The
# package's version is deploy/debian/changelog's, which must be pyproject.toml's.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
WHEELS="" OUT=$(pwd)
die() { echo "build-deb: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$(cd "${2:?--wheels DIR}" && pwd); shift 2 ;;
    --out) mkdir -p "${2:?--out DIR}"; OUT=$(cd "$2" && pwd); shift 2 ;;
    *) die "unknown argument $1 (usage: deploy/build-deb.sh [--wheels DIR] [--out DIR])" ;;
  esac
done
for tool in dpkg-buildpackage dh dh_virtualenv /usr/bin/python3.11; do
  command -v "$tool" >/dev/null || die "$tool missing: apt-get install debhelper dh-virtualenv python3-venv"
done

version=$(dpkg-parsechangelog -l "$SRC/deploy/debian/changelog" -S Version)
upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/pyproject.toml" | head -n1)
[ "${version%%-*}" = "$upstream" ] || die "deploy/debian/changelog:1: version $version, but pyproject.toml" \
  "says $upstream: add a changelog entry for $upstream (dch -c deploy/debian/changelog -v $upstream)"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tree="$stage/burst-controller-$version"
mkdir "$tree"
tar -C "$SRC" --exclude=__pycache__ --exclude='*.pyc' --exclude=deploy/debian \
  -cf - pyproject.toml README.md controller adapters policies lab deploy docs | tar -C "$tree" -xf -
cp -a "$SRC/deploy/debian" "$tree/debian"

echo "build-deb: building burst-controller $version in $tree${WHEELS:+ (offline, wheels from $WHEELS)}"
started=$(date +%s)
# a clean environment: Debian's tools and Python, nothing of a virtual environment or PYTHONPATH around us
( cd "$tree" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$stage" LC_ALL=C.UTF-8 \
    ${WHEELS:+BURST_WHEELHOUSE="$WHEELS"} ${SOURCE_DATE_EPOCH:+SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH"} \
    dpkg-buildpackage -b -us -uc ) > "$stage/build.log" 2>&1 \
  || { tail -n 60 "$stage/build.log" >&2; die "dpkg-buildpackage failed (the last lines above)"; }
debs=("$stage"/burst-controller_"$version"_*.deb)
[ -e "${debs[0]}" ] || die "no .deb in $stage after dpkg-buildpackage"
mv "${debs[@]}" "$OUT/"
for deb in "${debs[@]}"; do
  echo "build-deb: $OUT/$(basename "$deb") ($(du -h "$OUT/$(basename "$deb")" | cut -f1), $(($(date +%s) - started))s)"
done
