"""Drain without dropping a request, on the real components: two replicas behind a real HAProxy; a slow
request (4 s, a busybox CGI script) is in flight on one of them when it is drained. The slow request must
complete, new requests must only reach the other replica, and the container must be stopped and gone
after. Plus the forced path (timeout) with the real components, and the unit-level timing with fakes."""

from __future__ import annotations

import threading
import time

import httpx

from adapters.haproxy import HaproxyLoadBalancer
from controller.drain import DrainSettings, DrainTarget, drain_replica
from controller.ports import Owner, Server


def _add(lb, name, c):
    lb.add("web", Server(name=name, address=c.address, port=c.port))


def test_drain_lets_the_slow_request_finish(haproxy, web_replicas, node_runtime, docker_client):
    (na, a), (nb, b) = web_replicas(2)
    lb = HaproxyLoadBalancer(str(haproxy.socket))
    _add(lb, "s-a", a)
    _add(lb, "s-b", b)

    slow: dict[str, object] = {}

    def slow_request() -> None:
        with httpx.Client(trust_env=False, timeout=20) as client:
            started = time.monotonic()
            r = client.get(f"{haproxy.url}/cgi-bin/slow?4")
            slow.update(status=r.status_code, body=r.text.strip(), seconds=time.monotonic() - started)

    t = threading.Thread(target=slow_request)
    t.start()
    deadline = time.monotonic() + 5
    busy = None
    while busy is None and time.monotonic() < deadline:
        busy = next((n for n in ("s-a", "s-b") if lb.sessions("web", n) == 1), None)
        time.sleep(0.05)
    assert busy is not None, "the slow request never reached a server"
    (node, victim), (_, other) = ((na, a), (nb, b)) if busy == "s-a" else ((nb, b), (na, a))

    outcome: dict[str, object] = {}
    drainer = threading.Thread(target=lambda: outcome.update(result=drain_replica(
        lb, node_runtime, DrainTarget("web", busy, node, victim.id),
        DrainSettings(timeout=20, signal="SIGTERM", stop_timeout=5, poll_interval=0.2))))
    drain_started = time.monotonic()
    drainer.start()
    time.sleep(0.3)
    # while draining: every new request goes to the other replica, and succeeds
    with httpx.Client(trust_env=False, timeout=10) as client:
        answers = [client.get(f"{haproxy.url}/id") for _ in range(20)]
    assert [r.status_code for r in answers] == [200] * 20
    assert {r.text.strip() for r in answers} == {other.id[:12]}
    assert drainer.is_alive(), "the drain must wait for the request in flight"

    t.join(timeout=20)
    drainer.join(timeout=30)
    assert slow["status"] == 200 and slow["body"] == f"slow {victim.id[:12]}"
    result = outcome["result"]
    assert result.forced is False and result.sessions_left == 0
    assert result.waited >= 2.0  # it really waited for the 4 s request (started ~0.5 s before the drain)
    assert time.monotonic() - drain_started < 15
    assert [s.name for s in lb.list("web")] == [("s-b" if busy == "s-a" else "s-a")]
    assert [c.id for c in node_runtime.list(node, Owner("ctl-test"))] == []  # stopped and removed


def test_drain_timeout_forces(haproxy, web_replicas, node_runtime):
    ((node, a),) = web_replicas(1)
    lb = HaproxyLoadBalancer(str(haproxy.socket))
    _add(lb, "s-a", a)
    done: dict[str, int] = {}

    def long_request() -> None:
        try:
            with httpx.Client(trust_env=False, timeout=20) as client:
                done["status"] = client.get(f"{haproxy.url}/cgi-bin/slow?15").status_code
        except httpx.HTTPError:
            done["status"] = -1

    t = threading.Thread(target=long_request)
    t.start()
    deadline = time.monotonic() + 5
    while lb.sessions("web", "s-a") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    result = drain_replica(lb, node_runtime, DrainTarget("web", "s-a", node, a.id),
                           DrainSettings(timeout=1.0, stop_timeout=2, poll_interval=0.1))
    t.join(timeout=20)
    assert result.forced is True and result.sessions_left == 1 and 0.9 <= result.waited < 3
    assert lb.list("web") == [] and node_runtime.list(node, Owner("ctl-test")) == []
    assert done["status"] != 200  # a forced drain does cut what was left: that is what the timeout means


class _FakeLb:
    """Unit-test convenience only: the real HAProxy is exercised above."""

    def __init__(self, sessions: list[int]) -> None:
        self.calls: list[str] = []
        self._sessions = sessions

    def drain(self, backend: str, name: str) -> None:
        self.calls.append("drain")

    def sessions(self, backend: str, name: str) -> int:
        self.calls.append("sessions")
        return self._sessions.pop(0) if len(self._sessions) > 1 else self._sessions[0]

    def remove(self, backend: str, name: str) -> None:
        self.calls.append("remove")


class _FakeRuntime:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def stop(self, node, container_id, signal, timeout) -> None:
        self.calls.append(f"stop {signal} {timeout:g}")

    def remove(self, node, container_id) -> None:
        self.calls.append("remove-container")


def test_drain_order_of_operations_and_timeout_with_a_fake_clock():
    from controller.ports import Node

    now = [0.0]
    lb = _FakeLb([3, 2, 0])
    result = drain_replica(lb, _FakeRuntime(lb.calls), DrainTarget("web", "s", Node("i", "a", "tcp://x:1"), "c"),
                           DrainSettings(timeout=10, signal="SIGQUIT", stop_timeout=7, poll_interval=1),
                           clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert lb.calls == ["drain", "sessions", "sessions", "sessions", "remove", "stop SIGQUIT 7", "remove-container"]
    assert result.forced is False and result.waited == 2.0

    now[0] = 0.0
    lb = _FakeLb([5])
    result = drain_replica(lb, _FakeRuntime(lb.calls), DrainTarget("web", "s", Node("i", "a", "tcp://x:1"), "c"),
                           DrainSettings(timeout=3, poll_interval=1),
                           clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert result.forced is True and result.waited == 3.0 and result.sessions_left == 5
    assert lb.calls[-3:] == ["remove", "stop SIGTERM 30", "remove-container"]
