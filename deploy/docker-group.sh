#!/bin/sh
# The docker group (root-equivalent) for the service user burst-controller, only when the on-prem Docker
# Engine is this machine's socket (a unix:// host in the config's onprem.docker_hosts); a remote Engine is
# reached over TLS with certificates instead. With the group comes the drop-in that lets the status endpoint's
# process drop it (deploy/burst-controller-docker-group.conf: CAP_SETGID, passed on only). It never removes a
# membership; once the user is not in the group, it removes the drop-in. Used by deploy/install.sh and by the
# Debian package's postinst (deploy/debian/), which say how to run it again.
#
#   docker-group.sh CONFIG DROPIN_SOURCE DROPIN AGAIN      (AGAIN: what to do after installing Docker)
set -eu
[ $# -eq 4 ] || { echo "usage: docker-group.sh CONFIG DROPIN_SOURCE DROPIN AGAIN" >&2; exit 2; }
config=$1 source=$2 dropin=$3 again=$4
user=burst-controller
say() { echo "docker: $*"; }

if grep -v '^[[:space:]]*#' "$config" | grep -q 'unix://'; then
  if getent group docker >/dev/null; then
    usermod -a -G docker "$user"
    install -D -m 0644 "$source" "$dropin"
    say "$user added to the docker group (the config names a local socket; root-equivalent);" \
        "$dropin lets the status process drop it"
  else
    say "no docker group on this machine; after installing Docker, $again"
  fi
else
  say "no unix:// host in onprem.docker_hosts, $user not added to the docker group"
fi
if ! id -nG "$user" | tr ' ' '\n' | grep -qx docker && [ -e "$dropin" ]; then
  rm -f "$dropin"
  say "$user is not in the docker group: $dropin removed"
fi
