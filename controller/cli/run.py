"""`burstctl run --config /etc/burst-controller/controller.yaml`: the daemon under systemd (or a terminal).

Starts the loop (controller/daemon.py, wired by controller/wiring.py), the status endpoint, and the
conversation with systemd (READY, STATUS, WATCHDOG, STOPPING). SIGHUP reloads the policies; SIGTERM and
SIGINT stop gracefully: jobs in flight finish their current journaled step, then everything is closed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections import Counter
from typing import Any

from controller import __version__
from controller.config import add_config_argument, load_config, parse_listen
from controller.daemon import Daemon
from controller.ha.pair import HaDaemon, build_ha_daemon
from controller.loop.edges import Edges
from controller.secret_files import status_token
from controller.service import Notifier, setup_logging
from controller.status.confinement import shield_daemon
from controller.status.process import StatusProcess

__all__ = ["ControllerService", "add_parser"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run the controller daemon (what the systemd unit starts)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg.log_format, cfg.log_level)
    service = ControllerService(cfg)
    service.install_signal_handlers()
    return service.serve()


class ControllerService:
    """The daemon plus its status endpoint and systemd notifications; also run in-process by the demo."""

    def __init__(self, cfg: Any, *, edges: Edges | None = None, version: str = __version__) -> None:
        from controller.wiring import build_daemon, build_edges, build_store

        self.cfg = cfg
        self.token = status_token(cfg)
        self.edges = edges or build_edges(cfg)
        self.store = build_store(cfg)
        self.daemon: Daemon | HaDaemon
        if cfg.ha.enabled:  # SCALE-HA: one member of an active/standby pair (docs/ha.md)
            self.daemon = build_ha_daemon(cfg, edges=self.edges, store=self.store, version=version)
        else:
            self.daemon = build_daemon(cfg, edges=self.edges, store=self.store, version=version)
        self.notifier = Notifier()
        self.stop_requested = threading.Event()
        self.server: StatusProcess | None = None

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGHUP, lambda *_: self.daemon.request_reload())

    def start(self) -> None:
        self.daemon.start()
        host, port = parse_listen(self.cfg.status.listen)
        shield_daemon()  # the status process (same user) cannot read this one's memory or environment
        # its own process, serving snapshots the daemon publishes: status traffic cannot slow the loop
        self.server = StatusProcess(self.daemon, self.token, host, port, log_format=self.cfg.log_format,
                                    allowed_hosts=self.cfg.status.allowed_hosts)
        self.server.start()
        self.notifier.ready(self.summary())
        logger.info("controller %s running: %s", self.cfg.controller_id, self.summary())

    def summary(self) -> str:
        try:
            states: Counter[str] = Counter(r.state for r in self.store.live_replicas())
        except Exception as exc:  # noqa: BLE001 - the status line must never take the daemon down
            return f"state store unavailable: {exc}"
        replicas = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no cloud replicas"
        role = "standby, " if isinstance(self.daemon, HaDaemon) and self.daemon.standby else ""
        return f"{role}{len(self.daemon.runtimes)} policies, {replicas}"

    def serve(self) -> int:
        self.start()
        try:
            interval = min(self.notifier.watchdog_interval or 5.0, 5.0)
            while not self.stop_requested.wait(interval):
                ok, _ = self.daemon.ready()
                standby = isinstance(self.daemon, HaDaemon) and self.daemon.standby  # healthy, not acting
                if ok or standby:  # a controller whose store is gone stops feeding the watchdog: systemd restarts it
                    self.notifier.watchdog()
                self.notifier.status(self.summary())
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.notifier.stopping("stopping: finishing in-flight steps")
        if self.server is not None:
            self.server.stop()
        try:
            self.daemon.stop()
        finally:
            self.edges.close()
            self.store.close()
