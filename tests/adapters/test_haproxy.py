"""HaproxyLoadBalancer and HaproxyMetricsSource against a real HAProxy 2.6 (runtime API over its unix and
TCP stats sockets), with real replica containers behind it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from adapters.haproxy import HaproxyLoadBalancer, HaproxyMetricsSource
from controller.errors import NotFoundError
from controller.ports import Server
from tests.support.net import wait_port


def _server(name: str, container) -> Server:
    return Server(name=name, address=container.address, port=container.port)


def _ids(url: str, n: int) -> list[str]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        return [client.get(f"{url}/id").text.strip() for _ in range(n)]


def _host(container) -> str:
    return container.id[:12]


def _serving(*containers) -> None:
    """Each replica answers itself: before that, HAProxy's retry and redispatch send its share to the other
    one, and a round-robin assertion would see a single server (a busy machine starts httpd late)."""
    for c in containers:
        wait_port(c.address, c.port, timeout=60)


def test_add_drain_weight_remove(haproxy, web_replicas):
    (_, a), (_, b) = web_replicas(2)
    _serving(a, b)
    lb = HaproxyLoadBalancer(str(haproxy.socket))
    lb.add("web", _server("s-a", a))
    lb.add("web", _server("s-a", a))  # idempotent
    lb.add("web", _server("s-b", b))
    servers = {s.name: s for s in lb.list("web")}
    assert set(servers) == {"s-a", "s-b"}
    assert (servers["s-a"].address, servers["s-a"].port, servers["s-a"].state) == (a.address, a.port, "ready")
    assert set(_ids(haproxy.url, 6)) == {_host(a), _host(b)}

    lb.set_weight("web", "s-b", 0)
    assert set(_ids(haproxy.url, 6)) == {_host(a)}
    lb.set_weight("web", "s-b", 100)

    lb.drain("web", "s-a")
    assert {s.name: s.state for s in lb.list("web")}["s-a"] == "drain"
    assert set(_ids(haproxy.url, 6)) == {_host(b)}
    assert lb.sessions("web", "s-a") == 0

    lb.remove("web", "s-a")
    lb.remove("web", "s-a")  # gone: no-op
    lb.drain("web", "s-a")  # gone: no-op
    assert lb.sessions("web", "s-a") == 0
    assert [s.name for s in lb.list("web")] == ["s-b"]
    with pytest.raises(NotFoundError):
        lb.drain("nope", "s-a")
    with pytest.raises(NotFoundError):
        lb.list("nope")


def test_reload_drops_servers_and_reapply_restores_them(haproxy, web_replicas):
    (_, a), (_, b) = web_replicas(2)
    _serving(a, b)
    lb = HaproxyLoadBalancer(str(haproxy.socket))
    wanted = [_server("s-a", a), Server(name="s-b", address=b.address, port=b.port, state="drain")]
    assert lb.reapply("web", wanted) == ["s-a", "s-b"]
    haproxy.reload()
    assert lb.list("web") == []  # a reload really forgets runtime-added servers
    with httpx.Client(trust_env=False, timeout=5) as client:
        assert client.get(f"{haproxy.url}/id").status_code == 503
    assert lb.reapply("web", wanted) == ["s-a", "s-b"]
    assert {s.name: s.state for s in lb.list("web")} == {"s-a": "ready", "s-b": "drain"}
    assert set(_ids(haproxy.url, 4)) == {_host(a)}
    assert lb.reapply("web", wanted) == []  # nothing missing: nothing re-added


def test_tcp_runtime_api(haproxy_factory, web_replicas):
    hp = haproxy_factory(tcp_admin=True)
    ((_, a),) = web_replicas(1)
    _serving(a)
    lb = HaproxyLoadBalancer(hp.admin_tcp)
    lb.add("web", _server("s-a", a))
    assert _ids(hp.url, 2) == [_host(a)] * 2
    lb.remove("web", "s-a")
    assert lb.list("web") == []


def test_sessions_and_metrics_source(haproxy, web_replicas):
    ((_, a),) = web_replicas(1)
    _serving(a)
    lb = HaproxyLoadBalancer(str(haproxy.socket))
    lb.add("web", _server("s-a", a))
    source = HaproxyMetricsSource(str(haproxy.socket), "web", "sessions")
    idle = source.query(60)
    assert idle.ok and idle.value == 0.0

    results: list[int] = []

    def slow() -> None:
        with httpx.Client(trust_env=False, timeout=15) as client:
            results.append(client.get(f"{haproxy.url}/cgi-bin/slow?2").status_code)

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while lb.sessions("web", "s-a") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lb.sessions("web", "s-a") == 3
    busy = source.query(60)
    assert busy.ok and busy.value is not None and busy.value > idle.value  # mean of 0 and 3
    assert source.query(0).value == 3.0  # window 0: just this sample
    for t in threads:
        t.join()
    assert results == [200, 200, 200]
    assert lb.sessions("web", "s-a") == 0


def test_metrics_source_failure_is_an_observation(tmp_path: Path):
    source = HaproxyMetricsSource(str(tmp_path / "missing.sock"), "web")
    obs = source.query(60)
    assert obs.ok is False and obs.value is None and "missing.sock" in (obs.error or "")


def test_metrics_source_unknown_backend(haproxy):
    obs = HaproxyMetricsSource(str(haproxy.socket), "nope", "queue").query(60)
    assert obs.ok is False and "nope" in (obs.error or "")


def test_a_replica_gets_the_onprem_servers_weight_unless_the_policy_sets_one(haproxy_factory):
    """Traffic share: a cloud server joins with the weight the backend's own (on-prem) servers have, read
    from HAProxy, so it takes the share of one of them; a weight given (traffic.haproxy.weight) wins."""
    hp = haproxy_factory(backends=("web", "empty"),
                         static_servers={"web": ["onprem-1 127.0.0.1:9 weight 7", "onprem-2 127.0.0.1:9 weight 7",
                                                 "spare 127.0.0.1:9 weight 2"]})
    lb = HaproxyLoadBalancer(str(hp.socket), own_prefix="dc1-")
    lb.add("web", Server(name="dc1-web-r1", address="127.0.0.1", port=10))
    lb.add("web", Server(name="dc1-web-r2", address="127.0.0.1", port=11, weight=3))

    def weights(backend: str) -> dict[str, int]:
        return {s.name: s.weight for s in lb.list(backend)}

    assert weights("web") == {"onprem-1": 7, "onprem-2": 7, "spare": 2, "dc1-web-r1": 7, "dc1-web-r2": 3}
    lb.set_weight("web", "dc1-web-r1", 50)  # our own servers' weights never set the default
    lb.add("web", Server(name="dc1-web-r3", address="127.0.0.1", port=12))
    assert weights("web")["dc1-web-r3"] == 7
    lb.add("empty", Server(name="dc1-web-r4", address="127.0.0.1", port=13))
    assert weights("empty") == {"dc1-web-r4": 1}  # nothing to follow: HAProxy's default
