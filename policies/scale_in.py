"""Which replicas leave first on scale-in. Pure: the caller passes the replicas' facts and ``now``.

The order (documented in docs/replicas.md):
1. only replicas at least ``min_lifetime`` old are candidates (the policy's promise);
2. replicas not serving traffic go first (they carry nothing, so nothing can be cut);
3. then the least busy (fewest active sessions): the shortest drain, the fewest requests at risk;
4. ties go to the youngest (latest launch): the older ones have proven themselves healthy, and with
   per-second billing keeping an older instance costs the same;
5. the last ``keep_serving`` serving replicas are never chosen (1 while the cloud still carries traffic).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ReplicaView", "choose_scale_in"]


@dataclass(frozen=True, slots=True)
class ReplicaView:
    id: str
    launched_at: float  # seconds, same origin as ``now``
    sessions: int = 0  # active sessions on its load-balancer server
    serving: bool = True  # admitted to traffic and healthy


def choose_scale_in(
    replicas: Sequence[ReplicaView],
    count: int,
    now: float,
    min_lifetime: float = 0.0,
    keep_serving: int = 1,
) -> tuple[str, ...]:
    """Up to ``count`` replica ids to drain, in the order to drain them (fewer when the rules forbid)."""
    if count <= 0:
        return ()
    serving_left = sum(1 for r in replicas if r.serving)
    candidates = sorted(
        (r for r in replicas if now - r.launched_at >= min_lifetime),
        key=lambda r: (r.serving, r.sessions, -r.launched_at, r.id),
    )
    chosen: list[str] = []
    for r in candidates:
        if len(chosen) == count:
            break
        if r.serving:
            if serving_left <= keep_serving:
                continue
            serving_left -= 1
        chosen.append(r.id)
    return tuple(chosen)
