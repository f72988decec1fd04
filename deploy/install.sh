#!/usr/bin/env bash
# Install burst-controller as a systemd service: its system user and group, its own virtual environment,
# the unit, the config, a status token and the example policies. Idempotent: run it again to upgrade; an
# existing config, token or policy is never overwritten (only its owner and mode are set, so the service
# can read it and nobody else can).
#
#   sudo deploy/install.sh                       # install on this machine, then: systemctl enable --now burst-controller
#   DESTDIR=/tmp/stage deploy/install.sh         # stage into a directory (packaging, tests); no systemctl
#
# Environment: DESTDIR (staging root, default none), PREFIX (/opt/burst-controller),
# SYSCONFDIR (/etc/burst-controller), UNITDIR (/etc/systemd/system), SYSUSERSDIR (/etc/sysusers.d),
# PYTHON (python3),
# PIP_INSTALL_ARGS (extra pip arguments, e.g. "--no-index --find-links /srv/wheels" offline).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/burst-controller}
SYSCONFDIR=${SYSCONFDIR:-/etc/burst-controller}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-/etc/sysusers.d}
PYTHON=${PYTHON:-python3}
PIP_INSTALL_ARGS=${PIP_INSTALL_ARGS:-}

SERVICE_USER=burst-controller  # the unit's User= and Group=
say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }
# owner and mode of an installed file: the owner only on a real install (a staging DESTDIR has no such user)
own() { # own USER:GROUP MODE PATH
  chmod "$2" "$3"
  if [ -z "$DESTDIR" ]; then chown "$1" "$3"; fi
}

[ -n "$DESTDIR" ] || [ "$(id -u)" = 0 ] || die "run as root (or set DESTDIR to stage into a directory)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: apt-get install python3 python3-venv"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed"

venv="$DESTDIR$PREFIX/venv"
etc="$DESTDIR$SYSCONFDIR"
umask 022

# 0. the service's system user and group (sysusers.d: the same file a package would ship)
install -D -m 0644 "$SRC/deploy/burst-controller.sysusers" "$DESTDIR$SYSUSERSDIR/burst-controller.conf"
if [ -z "$DESTDIR" ]; then
  if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers "$SYSUSERSDIR/burst-controller.conf" || die "systemd-sysusers could not create $SERVICE_USER"
  elif ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/burst-controller --no-create-home \
      --shell /usr/sbin/nologin --comment "burst-controller daemon" "$SERVICE_USER" \
      || die "useradd could not create $SERVICE_USER"
  fi
  getent passwd "$SERVICE_USER" >/dev/null || die "user $SERVICE_USER missing after systemd-sysusers"
  say "user: $SERVICE_USER ($(id "$SERVICE_USER"))"
fi

# 1. the virtual environment, and the package from a clean copy of the source (pip builds in the tree it is
#    given: a staging copy keeps build/ and *.egg-info out of the checkout)
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "$PYTHON" -m venv "$venv" || die "python3 -m venv failed: apt-get install python3-venv"
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tar -C "$SRC" --exclude=__pycache__ --exclude="*.pyc" -cf - pyproject.toml README.md controller adapters policies lab \
  | tar -C "$stage" -xf -
say "installing burst-controller into $venv"
# shellcheck disable=SC2086 # PIP_INSTALL_ARGS is a list of arguments
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade $PIP_INSTALL_ARGS "$stage" \
  || die "pip install failed (offline? set PIP_INSTALL_ARGS='--no-index --find-links DIR')"
[ -x "$venv/bin/burstctl" ] || die "$venv/bin/burstctl missing after pip install"

# 2. the unit (ours: replaced on upgrade; local changes belong in `systemctl edit burst-controller`)
install -D -m 0644 "$SRC/deploy/burst-controller.service" "$DESTDIR$UNITDIR/burst-controller.service"
say "unit: $DESTDIR$UNITDIR/burst-controller.service"

# 3. configuration: never overwrite what ops edited. The directory and the config are root's, readable by
#    the service's group (root:burst-controller 0750 and 0640); an existing config gets that owner and mode
#    too (an install from before the static user left it root:root, which the service cannot read)
install -d -m 0755 "$etc" "$etc/policies.d"
own "root:$SERVICE_USER" 0750 "$etc"
if [ ! -e "$etc/controller.yaml" ]; then
  install -m 0640 "$SRC/deploy/controller.yaml" "$etc/controller.yaml"
  say "config: $etc/controller.yaml (edit controller_id and cloud before starting)"
else
  say "config: $etc/controller.yaml exists, kept"
fi
own "root:$SERVICE_USER" 0640 "$etc/controller.yaml"

# 4. the bearer token of the status endpoint's pause/resume/drain: owned by the service user, 0600 (the
#    controller refuses a secret file others can read; the unit's ProtectSystem=strict keeps it read-only)
if [ ! -s "$etc/status.token" ]; then
  ( umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' > "$etc/status.token" )
  say "token: $etc/status.token (new)"
else
  say "token: $etc/status.token exists, kept"
fi
own "$SERVICE_USER:$SERVICE_USER" 0600 "$etc/status.token"

# 5. the docker group, root-equivalent, only when the on-prem Docker Engine is this machine's socket (a
#    unix:// host in onprem.docker_hosts); a remote Engine is reached over TLS with certificates instead
#    With the group comes a drop-in that lets the status endpoint's process drop it (CAP_SETGID, passed on only)
dropin="$DESTDIR$UNITDIR/burst-controller.service.d/docker-group.conf"
if [ -z "$DESTDIR" ]; then
  if grep -v '^[[:space:]]*#' "$etc/controller.yaml" | grep -q 'unix://'; then
    if getent group docker >/dev/null; then
      usermod -a -G docker "$SERVICE_USER"
      install -D -m 0644 "$SRC/deploy/burst-controller-docker-group.conf" "$dropin"
      say "docker: $SERVICE_USER added to the docker group (the config names a local socket; root-equivalent);" \
          "$dropin lets the status process drop it"
    else
      say "docker: no docker group on this machine; after installing Docker, run this script again"
    fi
  else
    say "docker: no unix:// host in onprem.docker_hosts, $SERVICE_USER not added to the docker group"
  fi
  if ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx docker && [ -e "$dropin" ]; then
    rm -f "$dropin"
    say "docker: $SERVICE_USER is not in the docker group: $dropin removed"
  fi
fi

# 6. example policies, as *.yaml.example so none is loaded before it is edited; and the JSON schema
for f in "$SRC"/deploy/policies.d/*.yaml; do
  [ -e "$f" ] || continue
  install -m 0644 "$f" "$etc/policies.d/$(basename "$f").example"
done
if [ -e "$SRC/deploy/policy.schema.json" ]; then
  install -m 0644 "$SRC/deploy/policy.schema.json" "$etc/policy.schema.json"
fi
say "policies: examples in $etc/policies.d/*.yaml.example (copy to NAME.yaml and edit)"

# 7. what the controller reads at run time from deploy/: the node bootstrap (cloud-init) template and the
#    bridge-MAC script it embeds (adapters/docker_engine/bootstrap.py looks in <prefix>/share/ beside the venv)
install -D -m 0644 "$SRC/deploy/node-bootstrap.yaml.tmpl" "$DESTDIR$PREFIX/share/node-bootstrap.yaml.tmpl"
install -D -m 0755 "$SRC/deploy/pin-bridge-mac.sh" "$DESTDIR$PREFIX/share/pin-bridge-mac.sh"
#    and, for the monitoring side, the Prometheus alert rules and the Grafana dashboard (docs/operations.md)
install -D -m 0644 "$SRC/deploy/prometheus/burst-controller.rules.yml" \
  "$DESTDIR$PREFIX/share/prometheus/burst-controller.rules.yml"
install -D -m 0644 "$SRC/deploy/grafana/burst-controller.json" "$DESTDIR$PREFIX/share/grafana/burst-controller.json"

# 8. the guides the unit's Documentation= points at
if [ -d "$SRC/docs" ]; then
  install -d -m 0755 "$DESTDIR$PREFIX/docs"
  find "$SRC/docs" -maxdepth 1 -name '*.md' -exec install -m 0644 {} "$DESTDIR$PREFIX/docs/" \;
fi

# 9. tell systemd (only on a real install on a machine running systemd)
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
  say "done: systemctl enable --now burst-controller; then burstctl status"
else
  say "done (systemd not running or DESTDIR set: no daemon-reload)"
fi
