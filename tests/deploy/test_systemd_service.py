"""The service on a real systemd: one suite, on one booted stock Debian 12 machine (systemd 252 as PID 1, the
ECS emulator's node image, no internet). The machine installs python3-venv from the region's mirror (its
UserData), gets the checkout and wheels built on this host, and runs `deploy/install.sh` as an operator
would; then `systemctl enable --now`, reload with a policy added and with a broken one, `kill -9`, a stuck
loop that the watchdog restarts, JSON logs in journald, no denial from the hardening, `systemd-analyze
security` on the installed unit, a clear stop on a config the service cannot read. Then Docker Engine from
the mirror (docker.io) and the docker group's drop-in, and a real burst: a busybox container in the
machine's Docker whose CPU (a busy loop under a 0.5 CPU limit, 10% of it scales out) drives a `workload_cpu` threshold policy
with `replicas.max: 1`; the controller pushes the image from the machine's Docker to a cloud registry (on
the VSwitch gateway, with a password) and launches a node (Debian 12 with Docker baked in, booted by the
emulator, running the controller's UserData). `systemctl stop` while that node boots and `systemctl start`
resume the burst (same instance, no second launch); an upgrade in place (install.sh over the running
service, restart) keeps it; when the load stops the policy scales in and the instance is released, and no
instance of the controller is left in the emulator.

The controller in the machine talks to the ECS emulator that runs the machine, listening on the VSwitch
gateway (the machine reaches nothing else). The burst's traffic goes to an SLB load balancer of that
emulator (`traffic.slb`): a policy must route, HAProxy is not on the region's mirror, and an SLB is the
product's other supported target; the emulator's SLB holds the backend list (no listener health checks:
the controller's own HTTP health check admits the replica).

The tests run in order on the shared machine (each leaves the service active). Needs the private Docker
Engine and the node images (scripts/services.sh); building the wheels needs the package index once per
pyproject.toml (kept beside the node image cache)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.docker_engine.client import docker_client
from controller.ports import LABEL_CONTROLLER, TAG_CONTROLLER, Owner
from lab.emulator.ecs import EcsEmulator
from lab.emulator.node_images import IMAGES
from lab.emulator.slb import SlbState
from lab.localimage import ensure_busybox_image
from lab.localregistry import LocalRegistry
from tests.fixtures_ecs import KEY_ID, KEY_SECRET, REGION, new_pool
from tests.support.booted import DOCKER_HOST, REPO, UNIT, Machine, booted_machine, source_files, wheelhouse
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(2400)  # the first test boots and installs the machine: minutes when loaded

STOCK_12, BAKED_12 = IMAGES[0].image_id, IMAGES[1].image_id
CONTROLLER_ID = "systemd-test"
REG_USER, REG_PASSWORD = "burst", "pull-secret-8231"  # the cloud registry's (a test password, not a secret)
ETC = "/etc/burst-controller"
# what an operator's first install needs on a stock image: a venv (python3 is there, for cloud-init)
USER_DATA = """#cloud-config
runcmd:
  - [sh, -c, "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv"]
"""


def _wait(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    # a command that failed (AssertionError), an answer not yet JSON (ValueError): again
    return wait_until(what, check, timeout, every, retry=(AssertionError, ValueError))


def _wheels(work: Path) -> dict[str, bytes]:
    """The dependencies' wheels (and the build backend install.sh's pip needs), as the machine gets them."""
    return {f"wheels/{p.name}": p.read_bytes() for p in sorted(wheelhouse(work).glob("*.whl"))}


def _config(m: Machine) -> str:
    """deploy/controller.yaml as an operator edits it: the cloud endpoint (the emulator), the VSwitch CIDR
    for node certificates, the cloud registry (on the VSwitch gateway, plain HTTP, a user and password file),
    JSON logs, short intervals; the rest as shipped."""
    text = (REPO / "deploy/controller.yaml").read_text()
    for old, new in (("controller_id: dc1-burst", f"controller_id: {CONTROLLER_ID}"),
                     ("region: cn-hangzhou", f"region: {REGION}"),
                     ("endpoint: null ", f"endpoint: http://{m.gateway}:{m.port}"),
                     ("node_networks: [] ", f'node_networks: ["{m.cidr}"] '),
                     ("url: registry.cn-hangzhou.aliyuncs.com", f"url: {m.registry}"),
                     ("insecure: false", "insecure: true"),
                     ("auth: {type: none} ", (f"auth: {{type: basic, username: {REG_USER}, "
                                              f"password_file: {ETC}/registry.password}} ")),
                     ("log_format: text", "log_format: json"),
                     ("  sample: 15s", "  sample: 5s"),
                     ("  evaluate: 30s", "  evaluate: 5s"),
                     ("  reconcile: 60s", "  reconcile: 10s")):
        assert old in text, old
        text = text.replace(old, new)
    return text


POLICY = """\
name: web
description: the suite's policy (on-prem CPU from this machine's Docker, which it does not have)
workload:
  hosts: ["unix:///var/run/docker.sock"]
  selector: {app: web}
  service_port: 80
metric:
  source: host_cpu
  window: 10s
strategy:
  type: threshold
  scale_out_above: 80
  scale_in_below: 40
replicas: {min: 0, max: 0}  # never launches: the suite is about the service, not a burst
cloud:
  region: cn-test
  zones: [cn-test-a]
  instance_types: [ecs.c6.large]
  image_id: debian_12_x64_20G_alibase.vhd
  vswitches: {cn-test-a: vsw-t}
  security_group: sg-t
registry:
  target: registry.cn-test.example/team/web
traffic:
  haproxy: {socket: /run/haproxy/admin.sock, backend: web}
budget: {max_per_hour: 5.0, prices: {ecs.c6.large: 0.62}}
"""


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    client = docker_client(DOCKER_HOST, None, timeout=300)
    wheels = _wheels(tmp_path_factory.mktemp("wheels"))
    ensure_busybox_image(client, "local/busybox:1")  # the on-prem workload's image, loaded into the machine
    busybox_tar = b"".join(client.images.get("local/busybox:1").save(named="local/busybox:1"))
    client.close()
    # the burst's traffic goes to an SLB (the emulator's, on the same endpoint): HAProxy is not on the
    # region's mirror, and an SLB is what a datacenter without its own HAProxy would use
    slbs: list[SlbState] = []

    def with_slb(emu: EcsEmulator) -> None:
        slbs.append(emu.add_slb())  # as `burstctl emulate ecs --slb` serves it

    # cloud-init's UserData installs python3-venv from the region's mirror
    with booted_machine(STOCK_12, USER_DATA, tag="systemd-suite", prepare=with_slb) as m:
        # the cloud registry where the nodes and the machine reach it: the VSwitch gateway, with a password
        registry = LocalRegistry(tmp_path_factory.mktemp("cloudreg"), host=m.gateway,
                                 users={REG_USER: REG_PASSWORD}).start()
        try:
            m.put_tree("/root", {**source_files(), **wheels})
            m.sh("chmod 0755 /root/src/deploy/*.sh")
            m.registry, m.slb, m.lb_id, m.busybox_tar = registry.address, slbs[0], slbs[0].create(REGION, "web"), \
                busybox_tar
            yield m
        finally:
            registry.stop()


def _burst_instances(m: Machine, *, live: bool) -> list[str]:
    """This controller's instances: live ones as DescribeInstances by the controller tag lists them, or
    every one the emulator ever launched with the tag (released ones too), to count launches."""
    if live:
        pool = new_pool(m.emu, read_timeout=30)
        try:
            return sorted(i.id for i in pool.list(Owner(CONTROLLER_ID)))
        finally:
            pool.close()
    with m.emu.state.lock:
        return sorted(r.id for r in m.emu.state.instances.values() if r.tags.get(TAG_CONTROLLER) == CONTROLLER_ID)


INSTALL = "/root/src/deploy/install.sh"
OFFLINE = {"PIP_INSTALL_ARGS": "--no-index --find-links /root/wheels"}


def test_install_creates_the_user_and_only_the_service_reads_its_files(machine: Machine) -> None:
    out = machine.sh(INSTALL, env=OFFLINE)
    assert "install: done: systemctl enable --now burst-controller" in out, out
    assert "no docker group on this machine" in out, out  # a stock machine without Docker: no membership
    ident = machine.sh("id burst-controller")
    assert "(burst-controller)" in ident and "docker" not in ident, ident
    modes = machine.sh(f"stat -c '%n %U:%G %a' {ETC} {ETC}/controller.yaml {ETC}/status.token").splitlines()
    assert modes == [f"{ETC} root:burst-controller 750", f"{ETC}/controller.yaml root:burst-controller 640",
                     f"{ETC}/status.token burst-controller:burst-controller 600"], modes
    as_service = "setpriv --reuid=burst-controller --regid=burst-controller --init-groups"
    for f in ("controller.yaml", "status.token"):
        assert machine.rc(f"{as_service} cat {ETC}/{f} >/dev/null") == 0
        assert machine.rc(f"setpriv --reuid=nobody --regid=nogroup --clear-groups cat {ETC}/{f}") != 0
    # the operator's edits: the cloud endpoint and the AccessKey (the unit's EnvironmentFile, root's 0600)
    machine.put(f"{ETC}/controller.yaml", _config(machine), owner="root:burst-controller", mode="0640")
    machine.put(f"{ETC}/registry.password", REG_PASSWORD + "\n", owner="burst-controller:burst-controller",
                mode="0600")
    machine.put(f"{ETC}/environment", f"ALIBABA_CLOUD_ACCESS_KEY_ID={KEY_ID}\n"
                f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={KEY_SECRET}\n", mode="0600")


def test_enable_now_reaches_active_and_answers(machine: Machine) -> None:
    machine.sh(f"systemctl enable --now {UNIT}")
    pid = _wait("the unit active and ready", machine.active_pid, 300, 2)
    s = machine.show("User", "NRestarts", "StatusText", "StateDirectory")
    assert s["User"] == "burst-controller" and s["NRestarts"] == "0", s
    assert "0 policies" in s["StatusText"], s  # READY=1 came with the daemon's status line
    assert machine.sh(f"ps -o user= -p {pid}").strip() == "burst-controller"
    assert machine.sh("stat -c '%U %a' /var/lib/burst-controller").split() == ["burst-controller", "700"]
    # the token reached the status process: an authorized mutation of an unknown policy is a 404, not a 503
    token = machine.sh(f"cat {ETC}/status.token").strip()
    code = machine.sh("curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer " + token
                      + "' http://127.0.0.1:9180/v1/policies/none/pause")
    assert code == "404", code
    # the status endpoint's process runs at nice 10: setpriority passed the syscall filter
    child = machine.sh(f"pgrep -P {pid} -f controller.status.child").split()
    assert child and machine.sh(f"ps -o ni= -p {child[0]}").strip() == "10"


def test_reload_adds_a_policy_and_keeps_the_last_good_one(machine: Machine) -> None:
    pid = machine.active_pid()
    machine.put(f"{ETC}/policies.d/web.yaml", POLICY, owner="root:root", mode="0644")
    machine.sh(f"systemctl reload {UNIT}")
    _wait("the policy loaded", lambda: [p["name"] for p in machine.status()["policies"]] == ["web"], 60)
    # a broken edit: rejected with file, line and field; the last good version stays, in status and journal
    mark = machine.cursor()
    machine.put(f"{ETC}/policies.d/web.yaml", POLICY.replace("max: 0}", "max: -3}"), mode="0644")
    machine.sh(f"systemctl reload {UNIT}")
    status = _wait("the error in the status", lambda: (s := machine.status())["policy_errors"] and s, 60)
    errors = json.dumps(status["policy_errors"])
    assert "web.yaml" in errors and "max" in errors, errors
    assert [p["name"] for p in status["policies"]] == ["web"]
    journal = _wait("the error in the journal", lambda: "web.yaml" in (j := machine.journal(mark)) and j, 30)
    assert "last good version kept" in journal or "rejected" in journal, journal[-3000:]
    assert machine.active_pid() == pid  # a reload, not a restart
    machine.put(f"{ETC}/policies.d/web.yaml", POLICY, mode="0644")
    machine.sh(f"systemctl reload {UNIT}")
    _wait("the error gone", lambda: machine.status()["policy_errors"] == [], 60)


def test_kill_9_is_restarted(machine: Machine) -> None:
    pid = machine.active_pid()
    before = int(machine.show("NRestarts")["NRestarts"])
    machine.sh(f"kill -9 {pid}")
    new = _wait("a new main process", lambda: (p := machine.active_pid()) not in (0, pid) and p, 300, 2)
    assert int(machine.show("NRestarts")["NRestarts"]) >= before + 1
    assert machine.sh("pgrep -u burst-controller -f 'burstctl run'").split() == [str(new)]  # one daemon
    assert [p["name"] for p in machine.status()["policies"]] == ["web"]  # from the files and the state


def test_the_watchdog_restarts_a_stuck_loop(machine: Machine) -> None:
    """SIGSTOP freezes every thread of the daemon, so its loop stops pinging WATCHDOG=1; systemd kills and
    restarts it. WatchdogSec is lowered to 20s by a runtime drop-in (the shipped 60s would only be slower)."""
    machine.sh(f"mkdir -p /run/systemd/system/{UNIT}.d && printf '[Service]\\nWatchdogSec=20s\\n' "
               f"> /run/systemd/system/{UNIT}.d/watchdog.conf && systemctl daemon-reload && systemctl restart {UNIT}")
    try:
        pid = _wait("active", machine.active_pid, 300, 2)
        mark = machine.cursor()
        machine.sh(f"kill -STOP {pid}")
        # 20s without a ping, then a start (which may itself need a retry on a loaded machine)
        new = _wait("restarted by the watchdog", lambda: (p := machine.active_pid()) not in (0, pid) and p, 420, 2)
        journal = machine.sh(f"journalctl --no-pager -o cat --after-cursor='{mark}'")
        assert "Watchdog timeout" in journal and "Failed with result 'watchdog'" in journal, journal[-3000:]
        assert new
    finally:
        machine.sh(f"rm -rf /run/systemd/system/{UNIT}.d && systemctl daemon-reload && systemctl restart {UNIT}")
        _wait("active again", machine.active_pid, 300, 2)


def test_logs_are_json_lines_in_journald(machine: Machine) -> None:
    out = machine.sh(f"journalctl -u {UNIT} -o json --no-pager _UID=$(id -u burst-controller)")
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    messages = [json.loads(r["MESSAGE"]) for r in records if str(r.get("MESSAGE", "")).startswith("{")]
    assert messages and all({"ts", "level", "logger", "msg"} <= set(m) for m in messages)
    assert any(m["msg"].startswith("controller systemd-test running") for m in messages)
    assert {r["SYSLOG_IDENTIFIER"] for r in records} == {"burst-controller"}
    # every line the service wrote is JSON (no stray print, no traceback), but for the CLI's one-line refusal
    # to start (`burstctl run: error: ...`, text: it may be about the very config that chooses the format)
    plain = [r["MESSAGE"] for r in records if not str(r.get("MESSAGE", "")).startswith("{")]
    assert all(line.startswith("burstctl run: error: ") for line in plain), plain[:5]


def test_no_denial_from_the_hardening(machine: Machine) -> None:
    journal = machine.journal()
    assert "Started burst-controller.service" in journal
    # a seccomp kill shows as SIGSYS / status=31/SYS, a filtered call as EPERM; the word "seccomp" alone is
    # not a denial (the status process says in its own start-up line what the filter keeps out)
    for word in ("SIGSYS", "Bad system call", "Operation not permitted", "Permission denied",
                 "Traceback", "status=31/SYS"):
        assert word not in journal, [line for line in journal.splitlines() if word in line][:5]


def test_systemd_analyze_security_on_the_installed_unit(machine: Machine) -> None:
    out = machine.sh(f"systemd-analyze security {UNIT} --no-pager")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", out)
    assert m, out[-2000:]
    print(f"systemd-analyze security on the installed, running unit: {m.group(1)} {m.group(2)}")
    assert float(m.group(1)) <= 2.0, out
    assert "Service runs under a static non-root user identity" in out


def test_a_config_the_service_cannot_read_stops_with_one_clear_line(machine: Machine) -> None:
    mark = machine.cursor()
    machine.sh(f"chgrp root {ETC}/controller.yaml && systemctl restart {UNIT}", check=False)
    try:
        journal = _wait("the refusal in the journal", lambda: "permission denied" in (j := machine.journal(mark))
                        and j, 60)
        line = next(x for x in journal.splitlines() if "permission denied" in x)
        assert f"chgrp burst-controller {ETC} {ETC}/controller.yaml" in line, line
        assert "Traceback" not in journal
    finally:
        machine.sh(f"chgrp burst-controller {ETC}/controller.yaml && systemctl reset-failed {UNIT}; "
                   f"systemctl restart {UNIT}")
        _wait("active again", machine.active_pid, 300, 2)


def _proc_status(machine: Machine, pid: int | str) -> dict[str, str]:
    rows = machine.sh(f"cat /proc/{pid}/status").splitlines()
    return {k: v.strip() for k, v in (r.split(":", 1) for r in rows if ":" in r)}


def test_docker_from_the_mirror_and_the_status_process_drops_its_group(machine: Machine) -> None:
    """Docker Engine from the region's mirror (docker.io, as the node bootstrap installs it; the cloud
    registry on the gateway is plain HTTP, so daemon.json lists it, as an operator would) gives the machine a
    real docker group. install.sh then adds the service user to it (root-equivalent) with the drop-in that
    grants CAP_SETGID; the daemon keeps the group but no effective capability, the status process has
    neither the group nor any capability. The node CA comes from `burstctl pki init` as the service user."""
    machine.sh("mkdir -p /etc/docker && printf '{\"insecure-registries\": [\"%s\"]}\\n' "
               f"{machine.registry} > /etc/docker/daemon.json")
    machine.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io")
    _wait("dockerd answering", lambda: machine.rc("docker version >/dev/null") == 0, 120, 2)
    as_service = "setpriv --reuid=burst-controller --regid=burst-controller --init-groups"
    out = machine.sh(f"{as_service} /opt/burst-controller/venv/bin/burstctl pki init --config {ETC}/controller.yaml")
    assert "/var/lib/burst-controller/pki/ca.pem" in out, out
    out = machine.sh(INSTALL, env=OFFLINE)
    assert "added to the docker group" in out and "lets the status process drop it" in out, out
    mark = machine.cursor()
    machine.sh(f"systemctl restart {UNIT}")
    pid = _wait("active with the docker group", machine.active_pid, 300, 2)
    gid = machine.sh("getent group docker | cut -d: -f3").strip()
    daemon = _proc_status(machine, pid)
    assert gid in daemon["Groups"].split(), daemon["Groups"]
    assert int(daemon["CapEff"], 16) == 0 and int(daemon["CapAmb"], 16) == 1 << 6, daemon  # CAP_SETGID
    child = _wait("the status process", lambda: machine.sh(f"pgrep -P {pid} -f controller.status.child").split(), 60)
    status = _proc_status(machine, child[0])
    assert status["Groups"] == "", status["Groups"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
    assert int(status["CapAmb"], 16) == 0 and status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status
    assert machine.status()["controller_id"]  # it serves
    journal = machine.journal(mark)
    assert "kept supplementary groups" not in journal, journal[-2000:]
    for word in ("SIGSYS", "Operation not permitted", "status=31/SYS", "Traceback"):
        assert word not in journal, [line for line in journal.splitlines() if word in line][:5]
    out = machine.sh(f"systemd-analyze security {UNIT} --no-pager")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", out)
    assert m, out[-2000:]
    print(f"systemd-analyze security with the docker-group drop-in: {m.group(1)} {m.group(2)}")
    assert float(m.group(1)) <= 2.0, out


def _burst_policy(m: Machine) -> str:
    return f"""\
name: web
description: the suite's burst (a busybox container in this machine's Docker; an SLB in the emulator)
workload:
  hosts: ["unix:///var/run/docker.sock"]
  selector: {{app: web}}
  service_port: 80
  health: {{path: /, interval: 1s, timeout: 0.8s, passes: 2, failures: 3}}
metric:
  source: workload_cpu
  window: 10s
  stale_after: 120s
strategy:
  type: threshold
  scale_out_above: 10
  scale_in_below: 3
  sustained_out: 5s
  sustained_in: 10s
replicas: {{min: 0, max: 1, max_step_up: 1, max_step_down: 1}}
cooldown: {{scale_out: 5s, scale_in: 5s}}
min_lifetime: 0s
cloud:
  region: {REGION}
  zones: [cn-test-a]
  instance_types: [ecs.c6.large]
  image_id: {BAKED_12}
  vswitches: {{cn-test-a: vsw-t}}
  security_group: sg-t
registry:
  target: {m.registry}/systemd/web
traffic:
  slb: {{load_balancer_id: {m.lb_id}, port: 80}}
drain: {{timeout: 15s, signal: SIGTERM, stop_timeout: 2s}}
budget: {{max_per_hour: 5.0, prices: {{ecs.c6.large: 0.62}}}}
"""


# busybox httpd serving an index (the health check's /), the shell as PID 1 to stop on SIGTERM (no single
# quote: the command is single-quoted for the machine's shell)
WORKLOAD = 'echo ok > /www/index.html && httpd -f -p 80 -h /www & trap "kill $!; exit 0" TERM; wait'

# the load: a busy loop in the on-prem container (its shell's PID in /tmp/load), stopped by killing it
LOAD_ON = "docker exec -d web sh -c 'echo $$ > /tmp/load; while :; do :; done'"
LOAD_OFF = "docker exec web sh -c 'kill $(cat /tmp/load)'"


def _web(machine: Machine) -> dict[str, Any]:
    [policy] = machine.status()["policies"]
    assert policy["name"] == "web", policy
    return dict(policy)


def _serving(machine: Machine) -> list[str]:
    """The ids of the policy's instances once its replica serves (empty until then)."""
    web = _web(machine)
    return sorted(i["id"] for i in web["instances"]) if web["replicas"].get("serving") else []


def _node_replicas(machine: Machine, instance_id: str) -> list[str]:
    """This controller's replica containers on a node, listed by the node's own Docker (in its machine)."""
    node = machine.container.client.containers.get(f"ecs-{instance_id}")
    out = node.exec_run(["sh", "-c", f"docker ps -q --filter label={LABEL_CONTROLLER}={CONTROLLER_ID}"])
    assert out.exit_code == 0, out.output
    return out.output.decode().split()


def test_a_burst_stopped_midway_resumes_at_the_next_start(machine: Machine) -> None:
    """A real burst: the workload's CPU (a busy loop in the on-prem container, 0.5 CPU) crosses the threshold,
    the controller pushes the image from this machine's Docker to the cloud registry and launches a node (the
    emulator boots it: Debian 12 with Docker baked in). `systemctl stop` once the instance exists and before
    its replica serves; the state database passes SQLite's integrity check and the instance stays (nothing
    released, nothing leaked); `systemctl start` adopts it: the replica serves on it, in the SLB, with no
    second launch and one replica container on the node."""
    machine.put_tree("/root", {"busybox.tar": machine.busybox_tar})
    machine.sh("docker load -i /root/busybox.tar && rm /root/busybox.tar")
    run = f"docker run -d --name web --label app=web --restart unless-stopped {{}} local/busybox:1 sh -c '{WORKLOAD}'"
    limited = machine.rc(run.format("--cpus 0.5")) == 0
    if not limited:  # a machine whose cgroups refuse a CPU quota: the capacity is then the machine's CPUs
        print("burst: --cpus refused in this machine: the workload runs without a CPU limit")
        machine.sh("docker rm -f web; " + run.format(""))
    assert machine.sh("docker inspect -f '{{.State.Running}} {{.HostConfig.NanoCpus}}' web").split() == \
        ["true", "500000000" if limited else "0"]
    assert _burst_instances(machine, live=False) == []
    machine.put(f"{ETC}/policies.d/web.yaml", _burst_policy(machine), mode="0644")
    machine.sh(f"systemctl reload {UNIT}")
    _wait("the burst policy reading the workload's CPU",
          lambda: (w := _web(machine))["metric"] and w["metric"]["source"] == "workload_cpu" and w["metric"]["ok"], 120)
    machine.sh(LOAD_ON)
    started = time.monotonic()
    [launched] = _wait("an instance launched", lambda: _burst_instances(machine, live=False), 600, 1)
    print(f"burst: instance {launched} launched {time.monotonic() - started:.0f}s after the load began")
    # in the middle of the burst: the node is booting (or, on a slow start of the load, its replica already
    # serves: a burst in progress all the same); either way the next start must carry it on
    print(f"burst: stopped with the replica {'serving' if _serving(machine) else 'not serving yet'}")
    stopping = time.monotonic()
    machine.sh(f"systemctl stop {UNIT}")
    print(f"burst: systemctl stop took {time.monotonic() - stopping:.1f}s")
    assert machine.show("ActiveState")["ActiveState"] == "inactive"
    # as the service's user: a root-owned -wal/-shm file left behind would lock the service out of its database
    check = machine.sh("setpriv --reuid=burst-controller --regid=burst-controller --init-groups python3 -c "
                       "\"import sqlite3; print(sqlite3.connect('/var/lib/burst-controller/state.db')"
                       ".execute('PRAGMA integrity_check').fetchone()[0])\"")
    assert check.strip() == "ok", check
    assert _burst_instances(machine, live=True) == [launched]  # kept while the controller is down, not released
    time.sleep(10)  # the controller down for a while: nothing changes in the cloud without it
    assert _burst_instances(machine, live=True) == [launched]
    start = time.monotonic()
    machine.sh(f"systemctl start {UNIT}")
    ids = _wait("the replica serving after the start", lambda: _serving(machine), 900, 2)
    resumed = time.monotonic() - start
    print(f"burst: replica serving {resumed:.0f}s after `systemctl start` ({time.monotonic() - started:.0f}s "
          "after the load began)")
    assert ids == [launched]
    assert _burst_instances(machine, live=False) == [launched]  # no second launch
    assert _burst_instances(machine, live=True) == [launched]
    assert _node_replicas(machine, launched) and len(_node_replicas(machine, launched)) == 1
    assert [b.server_id for b in machine.slb.load_balancers[machine.lb_id].backends.values()] == [launched]
    events = json.loads(machine.sh("curl -sf 'http://127.0.0.1:9180/v1/events?limit=500'"))["events"]
    assert any(e.get("kind") == "stop" for e in events), [e.get("kind") for e in events][-20:]


def test_upgrade_in_place_keeps_config_token_state_and_the_burst(machine: Machine) -> None:
    files = (f"{ETC}/controller.yaml {ETC}/status.token {ETC}/environment {ETC}/registry.password "
             f"{ETC}/policies.d/web.yaml")
    before = machine.sh(f"sha256sum {files}; stat -c '%n %U:%G %a' {files}")
    events = machine.sh("curl -sf 'http://127.0.0.1:9180/v1/events?limit=500'")
    ids = _serving(machine)
    assert len(ids) == 1, _web(machine)  # the burst in progress
    pid = machine.active_pid()
    out = machine.sh(INSTALL, env=OFFLINE)  # over the running service
    assert "exists, kept" in out, out
    assert machine.active_pid() == pid  # the install itself does not restart it
    start = time.monotonic()
    machine.sh(f"systemctl restart {UNIT}")
    assert _wait("active after the upgrade", machine.active_pid, 300, 2) != pid
    assert _wait("the replica serving after the upgrade", lambda: _serving(machine), 600, 2) == ids
    print(f"upgrade: replica serving again {time.monotonic() - start:.0f}s after the restart")
    assert machine.sh(f"sha256sum {files}; stat -c '%n %U:%G %a' {files}") == before
    old_ids = {e["id"] for e in json.loads(events)["events"]}
    new_ids = {e["id"] for e in json.loads(machine.sh("curl -sf 'http://127.0.0.1:9180/v1/events?limit=500'"))["events"]}
    assert old_ids and old_ids <= new_ids  # the journal in the state database survived
    assert [p["name"] for p in machine.status()["policies"]] == ["web"]
    # the same burst: the same instance, no other launched, one replica on it, still in the SLB
    assert _burst_instances(machine, live=False) == ids and _burst_instances(machine, live=True) == ids
    assert len(_node_replicas(machine, ids[0])) == 1
    assert [b.server_id for b in machine.slb.load_balancers[machine.lb_id].backends.values()] == ids


def test_the_burst_ends_and_everything_is_released(machine: Machine) -> None:
    """The load stops: the policy scales in, the replica leaves the SLB and the instance is released; no
    instance of this controller is left in the emulator. Then Docker and its group are taken off the machine
    and install.sh removes the drop-in (with the group still there it adds the membership back: the config
    names a local socket)."""
    [instance] = _serving(machine)
    machine.sh(LOAD_OFF)
    started = time.monotonic()
    _wait("the instance released", lambda: _burst_instances(machine, live=True) == [], 600, 2)
    print(f"burst: instance released {time.monotonic() - started:.0f}s after the load stopped")
    _wait("no replica in the status", lambda: not (w := _web(machine))["instances"] and not any(
        n for s, n in w["replicas"].items() if s != "gone"), 120)
    assert machine.slb.load_balancers[machine.lb_id].backends == {}
    assert _burst_instances(machine, live=False) == [instance]  # one launch for the whole burst
    with machine.emu.state.lock:
        assert machine.emu.state.instances[instance].deleted_at is not None
    kinds = [e.get("kind") for e in json.loads(machine.sh("curl -sf 'http://127.0.0.1:9180/v1/events?limit=500'"))["events"]]
    # without Docker (and the suite's first policy back, which reads no Docker): install.sh removes the
    # drop-in; the service still starts
    machine.put(f"{ETC}/policies.d/web.yaml", POLICY, mode="0644")
    machine.sh(f"systemctl reload {UNIT}")
    _wait("the first policy back", lambda: _web(machine)["metric"]["source"] == "host_cpu", 120)
    dropin = "/etc/systemd/system/burst-controller.service.d/docker-group.conf"
    machine.sh("docker rm -f web && DEBIAN_FRONTEND=noninteractive apt-get purge -y -q docker.io && "
               "{ ! getent group docker >/dev/null || groupdel docker; }")
    out = machine.sh(INSTALL, env=OFFLINE)
    assert "no docker group on this machine" in out, out
    machine.sh(f"systemctl restart {UNIT}")
    _wait("active again without Docker", machine.active_pid, 300, 2)
    assert f"{dropin} removed" in out, out
    assert machine.rc(f"test -e {dropin}") != 0
    assert _burst_instances(machine, live=True) == [], kinds[-30:]
