"""The lab's fixed parts: the emulator's key pair, the label on everything the lab starts, the on-prem
workload (a busybox CGI page whose answer is slow, so sessions rise under load) and its health check,
HAProxy's configuration, the node images, and the free ports and node network it picks. Used by
lab/lab.py.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time

import docker

from controller.errors import TransientError

__all__ = ["BAKED_IMAGE", "DOCKER_HOST", "EMULATOR_KEY", "HAPROXY_CFG", "LAB_HEALTHCHECK", "LAB_LABEL", "STOCK_IMAGE", "VSWITCH", "WORKLOAD_CMD", "free_node_network", "free_port", "wait_port"]

EMULATOR_KEY = ("local", "local-secret")  # the emulator's default access key pair (not a real secret)
LAB_LABEL = "io.burst-controller.lab"
# a Docker HEALTHCHECK on the workload, as real services have: captured with it, carried to every cloud
# replica, and a replica is admitted only once Docker also says it is healthy (docs/replicas.md)
LAB_HEALTHCHECK = {"test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"], "interval": 500_000_000,
                   "timeout": 2_000_000_000, "retries": 3, "start_period": 0}
# busybox httpd with a CGI page that takes ~0.3 s, so concurrent clients show up as HAProxy sessions; the
# shell stays PID 1 to stop on SIGTERM (a bare httpd as PID 1 ignores it and waits for SIGKILL)
WORKLOAD_CMD = ("mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n"
                 "sleep 0.3\\necho served\\n' > /www/cgi-bin/work && chmod +x /www/cgi-bin/work "
                 "&& httpd -f -p 80 -h /www & trap 'kill $!; exit 0' TERM; wait")

HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin expose-fd listeners
    stats timeout 30s
    pidfile {root}/haproxy.pid

defaults
    mode http
    log stdout format raw local0
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue 10s
    retries 3
    option redispatch

frontend fe
    bind 127.0.0.1:{port}
    default_backend web

backend web
    balance roundrobin
    http-response set-header X-Served-By %[srv_name]
    server onprem 127.0.0.1:{onprem_port}
"""


def free_port(reserved: list[socket.socket]) -> int:
    """A loopback port kept reserved (its socket in ``reserved``) until the lab stops: bound with SO_REUSEADDR
    and never listening. The server given the port (HAProxy, Docker's proxy, the controller's status endpoint:
    all set SO_REUSEADDR) listens on it, again after each restart, while nothing else on the machine can take
    it in between (another bind to port 0, an outgoing connection's local port)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    reserved.append(s)
    return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TransientError(f"127.0.0.1:{port} did not open within {timeout:.0f}s")


DOCKER_HOST = os.environ.get("BURST_DOCKER_HOST", "unix:///var/lib/burst-controller-dev/docker.sock")
STOCK_IMAGE = "debian_12_x64_20G_alibase.vhd"  # systemd and cloud-init: the bootstrap installs Docker
BAKED_IMAGE = "debian_12_docker_x64_20G_alibase.vhd"  # Docker baked in: the bootstrap skips the install
VSWITCH = "vsw-lab"


def free_node_network(client: docker.DockerClient) -> str:
    """A /24 of 10.214.0.0/16 that no route of this machine and no network of the engine uses."""
    used = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False).stdout
    taken = {n["IPAM"]["Config"][0]["Subnet"] for n in client.api.networks() if (n.get("IPAM") or {}).get("Config")}
    for _ in range(200):
        cidr = f"10.214.{random.randint(1, 254)}.0/24"
        if cidr not in taken and cidr.split("/")[0].rsplit(".", 1)[0] + "." not in used:
            return cidr
    raise TransientError("no free /24 in 10.214.0.0/16 for the lab's node network")
