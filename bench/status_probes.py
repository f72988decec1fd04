"""Issue 19's probes against the real status process with its default limits (controller/status/guard.py),
printing what each got: a foreign Host on every route, a 200 MB header, 1,100 slow connections, 2,000
malformed requests, history with `since=1`, and the process's /proc status. Loopback only.

    .venv/bin/python bench/status_probes.py

The figures go to docs/reliability.md (part 6, the status endpoint). The behaviour itself is asserted by
tests/controller/status/test_status_guard.py with small limits; this runs the shipped ones.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.status.process import StatusProcess
from tests.support.net import free_port
from tests.support.status_source import MemoryStatusSource

ROUTES = ["/healthz", "/readyz", "/v1/status", "/v1/policies/web", "/v1/policies/web/history?since=1",
          "/v1/events", "/metrics", "/", "/ui/dashboard.js", "/openapi.json"]


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def main() -> int:
    log = tempfile.NamedTemporaryFile(prefix="status-probes-", suffix=".log", delete=False)  # noqa: SIM115
    saved = os.dup(1)
    os.dup2(log.fileno(), 1)  # the status process logs to the stdout it inherits
    sp = StatusProcess(MemoryStatusSource(), "probe-token-0123456789abcdef", "127.0.0.1", free_port())
    try:
        sp.start()
    finally:
        os.dup2(saved, 1)
    port, pid = sp.port, sp.pid
    assert pid is not None
    child = psutil.Process(pid)
    try:
        with httpx.Client(base_url=sp.url, trust_env=False, timeout=10) as c:
            codes = {c.get(r, headers={"Host": f"evil.example:{port}"}).status_code for r in ROUTES}
            ok = {c.get(r).status_code for r in ROUTES}
            print(f"foreign Host on {len(ROUTES)} routes: {sorted(codes)}; own Host: {sorted(ok)}")
            print(f"/docs {c.get('/docs').status_code}, /redoc {c.get('/redoc').status_code}, "
                  f"/openapi.json {c.get('/openapi.json').status_code}")
        rss0 = child.memory_info().rss
        with _connect(port) as s:
            s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: ".encode())
            sent = 0
            try:
                while sent < 200_000_000:
                    s.sendall(b"a" * 65536)
                    sent += 65536
            except OSError:
                pass
            try:
                answer = s.recv(200).split(b"\r\n")[0]
            except OSError as exc:
                answer = str(exc).encode()
        print(f"200 MB header: accepted {sent / 1e6:.1f} MB before the server closed, answer {answer!r}, "
              f"RSS {rss0 / 1e6:.0f} -> {child.memory_info().rss / 1e6:.0f} MB")
        held, refused = [], 0
        for _ in range(1100):
            s = _connect(port)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            held.append(s)
        t0 = time.monotonic()
        for s in held[1000:]:
            refused += s.recv(100).startswith(b"HTTP/1.1 503")
        first_ok = None
        while time.monotonic() - t0 < 30:
            try:
                if httpx.get(f"{sp.url}/healthz", trust_env=False, timeout=2).status_code == 200:
                    first_ok = time.monotonic() - t0
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        for s in held:
            s.close()
        print(f"1,100 slow connections: {refused} answered 503 at the cap; /healthz 200 again after "
              f"{first_ok if first_ok is None else round(first_ok, 1)} s")
        t0 = time.monotonic()
        for _ in range(2000):
            with _connect(port) as s:
                s.sendall(b"NOT HTTP\r\n\r\n")
                s.recv(100)
        took = time.monotonic() - t0
        time.sleep(11)
        text = Path(log.name).read_text()
        print(f"2,000 malformed requests in {took:.1f} s: {sum('malformed request' in x for x in text.splitlines())} "
              f"log lines: {[x.split(': ', 1)[1][:90] for x in text.splitlines() if 'malformed' in x]}")
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        print("status process:", {k: status[k].strip() for k in ("Groups", "CapEff", "NoNewPrivs", "Seccomp")},
              "environment:", sorted(child.environ()))
    finally:
        sp.stop()
        os.close(saved)
        os.unlink(log.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
