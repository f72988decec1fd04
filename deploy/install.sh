#!/usr/bin/env bash
# Install burst-controller as a systemd service: its own virtual environment, the unit, the config,
# a status token and the example policies. Idempotent: run it again to upgrade; an existing config,
# token or policy is never overwritten.
#
#   sudo deploy/install.sh                       # install on this machine, then: systemctl enable --now burst-controller
#   DESTDIR=/tmp/stage deploy/install.sh         # stage into a directory (packaging, tests); no systemctl
#
# Environment: DESTDIR (staging root, default none), PREFIX (/opt/burst-controller),
# SYSCONFDIR (/etc/burst-controller), UNITDIR (/etc/systemd/system), PYTHON (python3),
# PIP_INSTALL_ARGS (extra pip arguments, e.g. "--no-index --find-links /srv/wheels" offline).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/burst-controller}
SYSCONFDIR=${SYSCONFDIR:-/etc/burst-controller}
UNITDIR=${UNITDIR:-/etc/systemd/system}
PYTHON=${PYTHON:-python3}
PIP_INSTALL_ARGS=${PIP_INSTALL_ARGS:-}

say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }

[ -n "$DESTDIR" ] || [ "$(id -u)" = 0 ] || die "run as root (or set DESTDIR to stage into a directory)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: apt-get install python3 python3-venv"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed"

venv="$DESTDIR$PREFIX/venv"
etc="$DESTDIR$SYSCONFDIR"
umask 022

# 1. the virtual environment, and the package from a clean copy of the source (pip builds in the tree it is
#    given: a staging copy keeps build/ and *.egg-info out of the checkout)
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "$PYTHON" -m venv "$venv" || die "python3 -m venv failed: apt-get install python3-venv"
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tar -C "$SRC" --exclude=__pycache__ --exclude="*.pyc" -cf - pyproject.toml README.md controller adapters policies \
  | tar -C "$stage" -xf -
say "installing burst-controller into $venv"
# shellcheck disable=SC2086 # PIP_INSTALL_ARGS is a list of arguments
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade $PIP_INSTALL_ARGS "$stage" \
  || die "pip install failed (offline? set PIP_INSTALL_ARGS='--no-index --find-links DIR')"
[ -x "$venv/bin/burstctl" ] || die "$venv/bin/burstctl missing after pip install"

# 2. the unit (ours: replaced on upgrade; local changes belong in `systemctl edit burst-controller`)
install -D -m 0644 "$SRC/deploy/burst-controller.service" "$DESTDIR$UNITDIR/burst-controller.service"
say "unit: $DESTDIR$UNITDIR/burst-controller.service"

# 3. configuration: never overwrite what ops edited
install -d -m 0755 "$etc" "$etc/policies.d"
if [ ! -e "$etc/controller.yaml" ]; then
  install -m 0640 "$SRC/deploy/controller.yaml" "$etc/controller.yaml"
  say "config: $etc/controller.yaml (edit controller_id and cloud before starting)"
else
  say "config: $etc/controller.yaml exists, kept"
fi

# 4. the bearer token of the status endpoint's pause/resume/drain: 0600, root-only, handed to the
#    service by systemd (LoadCredential)
if [ ! -s "$etc/status.token" ]; then
  ( umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' > "$etc/status.token" )
  chmod 0600 "$etc/status.token"
  say "token: $etc/status.token (new)"
else
  chmod 0600 "$etc/status.token"
  say "token: $etc/status.token exists, kept"
fi

# 5. example policies, as *.yaml.example so none is loaded before it is edited; and the JSON schema
for f in "$SRC"/deploy/policies.d/*.yaml; do
  [ -e "$f" ] || continue
  install -m 0644 "$f" "$etc/policies.d/$(basename "$f").example"
done
if [ -e "$SRC/deploy/policy.schema.json" ]; then
  install -m 0644 "$SRC/deploy/policy.schema.json" "$etc/policy.schema.json"
fi
say "policies: examples in $etc/policies.d/*.yaml.example (copy to NAME.yaml and edit)"

# 6. what the controller reads at run time from deploy/: the node bootstrap (cloud-init) template and the
#    bridge-MAC script it embeds (adapters/bootstrap.py looks in <prefix>/share/ beside the venv)
install -D -m 0644 "$SRC/deploy/node-bootstrap.yaml.tmpl" "$DESTDIR$PREFIX/share/node-bootstrap.yaml.tmpl"
install -D -m 0755 "$SRC/deploy/pin-bridge-mac.sh" "$DESTDIR$PREFIX/share/pin-bridge-mac.sh"
#    and, for the monitoring side, the Prometheus alert rules and the Grafana dashboard (docs/operations.md)
install -D -m 0644 "$SRC/deploy/prometheus/burst-controller.rules.yml" \
  "$DESTDIR$PREFIX/share/prometheus/burst-controller.rules.yml"
install -D -m 0644 "$SRC/deploy/grafana/burst-controller.json" "$DESTDIR$PREFIX/share/grafana/burst-controller.json"

# 7. the guides the unit's Documentation= points at
if [ -d "$SRC/docs" ]; then
  install -d -m 0755 "$DESTDIR$PREFIX/docs"
  find "$SRC/docs" -maxdepth 1 -name '*.md' -exec install -m 0644 {} "$DESTDIR$PREFIX/docs/" \;
fi

# 8. tell systemd (only on a real install on a machine running systemd)
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
  say "done: systemctl enable --now burst-controller; then burstctl status"
else
  say "done (systemd not running or DESTDIR set: no daemon-reload)"
fi
