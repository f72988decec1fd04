#!/usr/bin/env bash
# Installs (when missing) and starts the real components the demo and the tests use, as PRIVATE instances
# beside whatever else runs on the machine; it never stops, restarts or reconfigures something it did not
# start (a user's Docker Engine, PostgreSQL cluster or bridge):
#   - a Docker Engine of our own: its own unix socket ($RUN_DIR/docker.sock), data root, exec root (so its own
#     containerd), pid file and bridge (burst0), no iptables rules (so it never touches another engine's
#     chains), plus a TCP endpoint on 127.0.0.1:2376 with mutual TLS (the controller's CA from
#     `burstctl pki init`) for the shared-engine nodes of the large benches. It hosts the on-prem workload and
#     the emulated ECS instances, which are booted Debian machines (docs/ecs.md); registries on their VSwitch
#     gateways (10.214.X.1, the lab's node networks) speak plain HTTP to it;
#   - a PostgreSQL 15 cluster of our own (data in $RUN_DIR/pg, 127.0.0.1:25432) for the state-store and HA tests;
#   - the node images of the ECS emulator (debootstrap, cached by content outside the checkout).
# Registries, HAProxy, Prometheus and the ECS emulator are started per test/demo by the code itself.
#
#   scripts/services.sh install        apt-get the system packages (apt-get update once)
#   scripts/services.sh start          start what is not running; remembers what it started
#   scripts/services.sh stop           stop only what `start` started
#   scripts/services.sh env            print the environment the tests/demo read
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN_DIR=${BURST_RUN_DIR:-/var/lib/burst-controller-dev}
PKI_DIR="$RUN_DIR/pki"
# What THIS invocation started (test.sh/quickstart.sh pass their own file), so a stop never takes down
# services someone else started (another test run's engine or database).
STARTED=${BURST_SERVICES_STARTED:-$RUN_DIR/started}
DOCKER_TLS_ADDR=127.0.0.1:2376
DOCKER_SOCK="$RUN_DIR/docker.sock"
DOCKER_EXEC=/run/burst-controller-dev/docker
BRIDGE=burst0
BRIDGE_CIDR=${BURST_BRIDGE_CIDR:-10.212.0.1/24}
# Outside the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default): a port in it can
# be held by any outgoing connection's local end, even one in TIME_WAIT, and the cluster then fails to bind.
PG_PORT=25432
PG_DIR="$RUN_DIR/pg"
PKGS=(docker.io containerd runc iptables docker-registry skopeo haproxy busybox-static openssl
      prometheus postgresql chromium chromium-driver curl procps iproute2 systemd python3-venv sqlite3
      debootstrap apt-utils debhelper dh-virtualenv)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_pkgs() {
  local missing=()
  for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "services: installing ${missing[*]}"
    as_root apt-get update -qq
    # Debian's packages would start their own daemons (haproxy, prometheus, docker-registry...); the project
    # runs its own instances on loopback. policy-rc.d is Debian's switch to keep postinst from starting them.
    local added_policy="" rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
      as_root chmod +x /usr/sbin/policy-rc.d; added_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    [ -n "$added_policy" ] && as_root rm -f /usr/sbin/policy-rc.d
    return $rc
  fi
}

burstctl() { "$ROOT/.venv/bin/burstctl" "$@"; }

our_dockerd_pid() { local p; p=$(cat "$DOCKER_EXEC.pid" 2>/dev/null) || return 1; kill -0 "$p" 2>/dev/null && echo "$p"; }

start_dockerd() {
  mkdir -p "$RUN_DIR" "$(dirname "$DOCKER_EXEC")"
  burstctl pki init --dir "$PKI_DIR" --server-ip 127.0.0.1 >/dev/null
  if our_dockerd_pid >/dev/null && docker_tls_ok; then return 0; fi
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge && ip addr add "$BRIDGE_CIDR" dev "$BRIDGE" && ip link set "$BRIDGE" up
    echo "bridge $BRIDGE" >> "$STARTED"
  fi
  # docker0-style MAC pinning for our bridge (deploy/pin-bridge-mac.sh says why)
  sh "$ROOT/deploy/pin-bridge-mac.sh" "$BRIDGE"
  local driver=overlay2
  [ "$(stat -f -c %T "$RUN_DIR")" = overlayfs ] && driver=vfs  # overlay2 cannot stack on overlayfs
  setsid dockerd --data-root "$RUN_DIR/docker-data" --exec-root "$DOCKER_EXEC" --pidfile "$DOCKER_EXEC.pid" \
    --bridge="$BRIDGE" --iptables=false --ip-masq=false --storage-driver="$driver" \
    --insecure-registry 10.214.0.0/16 \
    -H "unix://$DOCKER_SOCK" -H "tcp://$DOCKER_TLS_ADDR" \
    --tlsverify --tlscacert "$PKI_DIR/ca.pem" --tlscert "$PKI_DIR/node-cert.pem" --tlskey "$PKI_DIR/node-key.pem" \
    >"$RUN_DIR/dockerd.log" 2>&1 < /dev/null &
  echo dockerd >> "$STARTED"
  for _ in $(seq 150); do docker_tls_ok && return 0; sleep 0.2; done
  echo "services: our dockerd did not come up; see $RUN_DIR/dockerd.log" >&2; tail -20 "$RUN_DIR/dockerd.log" >&2; exit 1
}

stop_dockerd() {
  local pid; pid=$(our_dockerd_pid) || return 0
  kill "$pid"; for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

docker_tls_ok() {
  docker -H "unix://$DOCKER_SOCK" info >/dev/null 2>&1 &&
  docker --tlsverify --tlscacert "$PKI_DIR/ca.pem" --tlscert "$PKI_DIR/controller-cert.pem" \
    --tlskey "$PKI_DIR/controller-key.pem" -H "tcp://$DOCKER_TLS_ADDR" version >/dev/null 2>&1
}

pg_bin() { local ver; ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1); [ -n "$ver" ] && echo "/usr/lib/postgresql/$ver/bin"; }

start_postgres() {
  local bin; bin=$(pg_bin) || { echo "services: postgresql is not installed" >&2; exit 1; }
  mkdir -p "$PG_DIR"; chown postgres: "$PG_DIR"; chmod 700 "$PG_DIR"
  if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
    su postgres -s /bin/sh -c "$bin/initdb -D '$PG_DIR/data' -U postgres --auth=trust -E UTF8 >'$PG_DIR/initdb.log'"
  fi
  if ! su postgres -s /bin/sh -c "$bin/pg_ctl -D '$PG_DIR/data' status" >/dev/null 2>&1; then
    local try
    for try in 1 2 3; do
      su postgres -s /bin/sh -c "$bin/pg_ctl -D '$PG_DIR/data' -l '$PG_DIR/postgres.log' -w -t 60 start \
        -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1\"" >/dev/null && break
      # The port may be held for a moment (a connection's end in TIME_WAIT); anything else is said and fatal.
      if [ "$try" = 3 ] || ! tail -5 "$PG_DIR/postgres.log" | grep -q "Address already in use"; then
        echo "services: our PostgreSQL did not start on 127.0.0.1:$PG_PORT; the end of $PG_DIR/postgres.log:" >&2
        tail -8 "$PG_DIR/postgres.log" >&2
        exit 1
      fi
      echo "services: 127.0.0.1:$PG_PORT is in use; trying again in 5 s" >&2
      sleep 5
    done
    echo "postgres" >> "$STARTED"
  fi
  local psql="$bin/psql -h 127.0.0.1 -p $PG_PORT -U postgres -qtA"
  $psql -c "SELECT 1 FROM pg_roles WHERE rolname='burst'" | grep -q 1 ||
    $psql -c "CREATE ROLE burst LOGIN SUPERUSER PASSWORD 'burst'"
}

stop_postgres() {
  local bin; bin=$(pg_bin) || return 0
  su postgres -s /bin/sh -c "$bin/pg_ctl -D '$PG_DIR/data' -m fast -w stop" >/dev/null 2>&1 || true
}

# The ECS emulator's node images (debootstrap; built once per machine, cached by content outside the checkout)
build_node_images() { burstctl emulate node-images build; }

case "${1:-}" in
  install) install_pkgs ;;
  start) mkdir -p "$RUN_DIR"; [ -f "$STARTED" ] || : > "$STARTED"
         start_dockerd; start_postgres; build_node_images ;;
  stop)
    [ -f "$STARTED" ] || exit 0
    while read -r what arg; do
      case "$what" in
        dockerd) stop_dockerd ;;
        postgres) stop_postgres ;;
        bridge) ip link del "$arg" 2>/dev/null || true ;;
      esac
    done < <(tac "$STARTED")  # the reverse order of starting: the bridge after the engine on it
    rm -f "$STARTED" ;;
  env)
    echo "BURST_DOCKER_HOST=unix://$DOCKER_SOCK"
    echo "BURST_DOCKER_TLS_ENDPOINT=tcp://$DOCKER_TLS_ADDR"
    echo "BURST_PKI_DIR=$PKI_DIR"
    echo "BURST_PG_URL=postgresql+psycopg://burst:burst@127.0.0.1:$PG_PORT/postgres" ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
