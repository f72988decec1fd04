"""Living under systemd: sd_notify messages over $NOTIFY_SOCKET (READY, STATUS, WATCHDOG, STOPPING) and
logging to stdout for journald, as text or JSON lines, with every registered secret redacted.

Called by ``burstctl run`` (the daemon) at start-up, on each tick and at shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import IO, Any
from urllib.parse import quote

__all__ = [
    "JsonFormatter",
    "Notifier",
    "RedactingFilter",
    "TextFormatter",
    "forget_secrets",
    "notify",
    "redact",
    "register_secret",
    "setup_logging",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sd_notify


def _notify_address(raw: str) -> str | None:
    if raw.startswith("@"):  # abstract namespace socket
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None  # vsock and other forms are not used by a system service


def notify(*assignments: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``KEY=value`` lines to the service manager. False (and nothing sent) when not under systemd
    Type=notify or when the socket is gone; never raises, because a lost notification must not stop the
    controller (systemd's watchdog notices if it matters)."""
    env = os.environ if environ is None else environ
    raw = env.get("NOTIFY_SOCKET", "")
    address = _notify_address(raw) if raw else None
    if address is None:
        return False
    payload = "\n".join(assignments).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
        return True
    except OSError as exc:
        logger.warning("sd_notify failed", extra={"notify_socket": raw, "error": str(exc)})
        return False


class Notifier:
    """The daemon's conversation with systemd: ready once, status lines, watchdog pings, stopping.

    ``watchdog_interval`` is half of $WATCHDOG_USEC (as sd_watchdog_enabled(3) advises), or None when the
    watchdog is off or meant for another process ($WATCHDOG_PID)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._env = dict(os.environ if environ is None else environ)
        self.enabled = bool(self._env.get("NOTIFY_SOCKET"))
        self.watchdog_interval = self._watchdog_interval()
        self._last_status = ""

    def _watchdog_interval(self) -> float | None:
        usec = self._env.get("WATCHDOG_USEC", "")
        pid = self._env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        return int(usec) / 1e6 / 2

    def _send(self, *assignments: str) -> bool:
        return notify(*assignments, environ=self._env) if self.enabled else False

    def ready(self, status: str = "") -> bool:
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        return self._send(*lines)

    def status(self, text: str) -> bool:
        text = _one_line(text)
        if text == self._last_status:  # the journal does not need the same line every tick
            return True
        self._last_status = text
        return self._send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC is required with RELOADING=1 by systemd >= 253 for Type=notify-reload; harmless before.
        return self._send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self, status: str = "") -> bool:
        lines = ["STOPPING=1"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        return self._send(*lines)


def _one_line(text: str) -> str:
    return redact(" ".join(text.split()))[:400]


# --------------------------------------------------------------------------- secrets

_MIN_SECRET = 4  # shorter values would redact ordinary words; such a "secret" protects nothing anyway
_secrets: set[str] = set()
_secrets_sorted: tuple[str, ...] = ()
_secrets_lock = threading.Lock()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Never show ``value`` in a log line or notification again (also its URL-encoded form)."""
    global _secrets_sorted
    if not value:
        return
    if len(value) < _MIN_SECRET:
        logger.warning("a registered secret is shorter than %d characters and cannot be redacted safely",
                       _MIN_SECRET)
        return
    with _secrets_lock:
        _secrets.update({value, quote(value, safe="")})
        # longest first, so a secret that contains another is masked whole
        _secrets_sorted = tuple(sorted(_secrets, key=len, reverse=True))


def forget_secrets() -> None:
    """Drop every registered secret (tests)."""
    global _secrets_sorted
    with _secrets_lock:
        _secrets.clear()
        _secrets_sorted = ()


def redact(text: str) -> str:
    for secret in _secrets_sorted:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return redact(str(value))


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no registered secret survives in its message, arguments, extras or
    exception text. Installed on the handler, so it sees records from every logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets_sorted:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string in any library must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message), None
        for key, value in _extras(record).items():
            setattr(record, key, _redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None  # the formatted (and redacted) exc_text is what gets written
        return True


class TextFormatter(logging.Formatter):
    """``2024-05-01T10:00:00.123Z INFO controller.loop.tick: message key=value ...`` (extras appended)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            tail = " ".join(f"{k}={_compact(v)}" for k, v in extras.items())
            head, sep, rest = line.partition("\n")  # keep a traceback below the extras
            line = f"{head} {tail}{sep}{rest}"
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extras, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        return redact(json.dumps(doc, default=str, ensure_ascii=False))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _compact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


def setup_logging(fmt: str = "text", level: str | int = "INFO", stream: IO[str] | None = None,
                  quiet: Iterable[str] = ("apscheduler", "urllib3", "docker", "httpx", "httpcore")) -> logging.Handler:
    """Replace the root handlers with one stdout handler (journald adds its own timestamps, but ours are
    kept for `burstctl run` in a terminal) in ``fmt`` = text | json, redacting secrets."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log_format must be text or json, not {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in quiet:  # chatty libraries: their INFO lines are noise in the journal
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler
