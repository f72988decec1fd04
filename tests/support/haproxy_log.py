"""HAProxy's request log in the lab (``option httplog`` to ``haproxy.log`` in the lab's root): each request
with the server that answered, when it was received, when its connection to that server was made, its
status, termination state and retries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from lab.lab import Lab

__all__ = ["Logged", "haproxy_log", "log_size"]

_LOG = re.compile(r"^\S+ \[(?P<date>[^\]]+)\] \S+ (?P<backend>[^/\s]+)/(?P<server>\S+) "
                  r"(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/\+?(?P<Ta>-?\d+) (?P<status>-?\d+) "
                  r"\S+ \S+ \S+ (?P<tsc>\S{4}) \d+/\d+/\d+/\d+/(?P<retries>\+?\d+) ")


@dataclass
class Logged:
    server: str
    received: float  # epoch seconds HAProxy received the request (``%tr``)
    connected: float | None  # when its connection to ``server`` was made (None: never)
    finished: float  # when HAProxy was done with it (``%tr`` + ``Ta``)
    status: int
    termination: str
    retries: str  # "+N" when redispatched to another server

    @property
    def failed(self) -> bool:
        return not (0 < self.status < 500 and self.termination.startswith("--"))


def haproxy_log(lab: Lab, offset: int) -> list[Logged]:
    out = []
    for line in (lab.root / "haproxy.log").read_bytes()[offset:].decode(errors="replace").splitlines():
        m = _LOG.match(line)
        if m is None:
            continue
        received = datetime.strptime(m["date"], "%d/%b/%Y:%H:%M:%S.%f").timestamp()  # local time, like HAProxy
        tr, tw, tc = int(m["TR"]), int(m["Tw"]), int(m["Tc"])
        connected = received + (tr + tw + tc) / 1000 if min(tr, tw, tc) >= 0 else None
        out.append(Logged(m["server"], received, connected, received + int(m["Ta"]) / 1000, int(m["status"]),
                          m["tsc"], m["retries"]))
    return out


def log_size(lab: Lab) -> int:
    return (lab.root / "haproxy.log").stat().st_size
