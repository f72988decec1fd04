"""sd_notify over real datagram sockets (path and abstract), the watchdog interval, and logging: JSON lines
with structured extras, text, and secrets redacted from every part of every record."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.service import Notifier, forget_secrets, notify, register_secret, setup_logging


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    sock.bind(address)
    sock.settimeout(2)
    yield sock, address
    sock.close()


def test_notify_over_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    n = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000000"})
    assert n.enabled and n.watchdog_interval == 10.0
    assert n.ready("3 policies loaded")
    assert sock.recv(4096).decode().split("\n") == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=3 policies loaded"]
    assert n.status("web: out -> 2\n(cpu 81%)")
    assert sock.recv(4096) == b"STATUS=web: out -> 2 (cpu 81%)"  # one line
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.stopping("draining in-flight steps")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining in-flight steps"


def test_notify_over_an_abstract_socket() -> None:
    name = f"burst-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"


def test_status_is_not_repeated_and_secrets_are_masked(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    register_secret("notify-secret-value")
    try:
        n = Notifier({"NOTIFY_SOCKET": address})
        assert n.status("token notify-secret-value")
        assert sock.recv(4096) == b"STATUS=token ***"
        assert n.status("token notify-secret-value")  # same line: not sent again
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    finally:
        forget_secrets()


def test_without_systemd_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert notify("READY=1", environ={}) is False
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None and n.ready() is False
    # a socket that vanished: logged, never raised
    assert notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_watchdog_for_another_pid_is_ignored() -> None:
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 0.5
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    forget_secrets()


def test_json_lines_with_extras_and_redaction(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("json", "INFO", stream=out)
    for secret in ("AKsecretABCDEF123", "registry-pass-9", "status-token-abcdef", "WORKLOAD_DB_PASSWORD_VALUE"):
        register_secret(secret)
    log = logging.getLogger("controller.test")
    log.info("launch %s", "i-123", extra={"policy": "web", "count": 2, "auth": "Bearer status-token-abcdef"})
    log.warning("ecs said %s", "SignatureDoesNotMatch for AKsecretABCDEF123",
                extra={"env": {"DB_PASSWORD": "WORKLOAD_DB_PASSWORD_VALUE"}, "args_list": ["registry-pass-9"]})
    try:
        raise RuntimeError("login failed with registry-pass-9 (url-encoded: registry-pass-9)")
    except RuntimeError:
        log.exception("replicate failed")
    log.debug("not shown at INFO")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3
    assert lines[0]["msg"] == "launch i-123" and lines[0]["policy"] == "web" and lines[0]["count"] == 2
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "controller.test" and lines[0]["ts"].endswith("Z")
    assert lines[0]["auth"] == "Bearer ***"
    assert lines[1]["env"] == {"DB_PASSWORD": "***"} and lines[1]["args_list"] == ["***"]
    assert "RuntimeError" in lines[2]["exc"]
    text = out.getvalue()
    for secret in ("AKsecretABCDEF123", "registry-pass-9", "status-token-abcdef", "WORKLOAD_DB_PASSWORD_VALUE"):
        assert secret not in text


def test_text_format_and_library_loggers(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("text", "INFO", stream=out)
    register_secret("p@ss word/with:chars")
    logging.getLogger("uvicorn.error").info("started")  # any library logger goes through the same filter
    logging.getLogger("x").info("url http://u:p%40ss%20word%2Fwith%3Achars@h and raw p@ss word/with:chars",
                                extra={"host": "h1"})
    text = out.getvalue()
    assert " INFO uvicorn.error: started" in text
    assert "url http://u:***@h and raw *** host=h1" in text
    assert "p@ss" not in text and "p%40ss" not in text


def test_bad_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text or json"):
        setup_logging("xml")
