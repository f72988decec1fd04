#!/bin/sh
# Pin a Linux bridge's MAC address (default: docker0), so it no longer changes when containers start or stop.
#
# A bridge without an explicitly set address takes the lowest MAC of its ports, so every container started
# or stopped on it can change the bridge's MAC. The other containers keep the old one in their ARP cache for
# the gateway, and their replies to the host (docker-proxy's connections to them) are lost until that entry
# is resolved again: requests to published ports hang for 10 s and more. Docker Engine 20.10 (Debian's
# docker.io) does not pin it; see docs/replicas.md "The Docker bridge's MAC address".
# Idempotent; needs CAP_NET_ADMIN. Used by scripts/services.sh, the lab (lab/lab.py) and the node
# bootstrap (deploy/node-bootstrap.yaml.tmpl, after every start of the node's Docker Engine).
set -eu
br="${1:-docker0}"
sys="/sys/class/net/$br"
[ -d "$sys/bridge" ] || { echo "pin-bridge-mac: $br is not a bridge" >&2; exit 1; }
[ "$(cat "$sys/addr_assign_type")" = 3 ] && exit 0  # NET_ADDR_SET: already pinned
mac="$(cat "$sys/address")"
if [ "$mac" = 00:00:00:00:00:00 ]; then  # no port yet: a random locally administered unicast address
  mac="02:42$(od -An -N4 -tx1 /dev/urandom | tr -s ' ' ':')"
fi
ip link set dev "$br" address "$mac"
