"""Which replicas leave first on scale-in. Pure: the caller passes the replicas' facts and ``now``.

The order (documented in docs/replicas.md):
1. only replicas at least ``min_lifetime`` old are candidates (the policy's promise);
2. replicas not serving traffic go first (they carry nothing, so nothing can be cut);
3. then the least busy (fewest active sessions): the shortest drain, the fewest requests at risk;
4. ties go to the youngest (latest launch): the older ones have proven themselves healthy, and with
   per-second billing keeping an older instance costs the same;
5. the last ``keep_serving`` serving replicas are never chosen (1 while the cloud still carries traffic).

With several replicas on one instance (``replicas_per_node`` > 1), between rules 2 and 3: the replicas with
the fewest others left on their instance go first, counted as the choice proceeds, so the replicas of one
instance leave together and the instance can be released (a half-empty instance costs as much as a full one).
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
    node: str | None = None  # the instance it runs on, when replicas share instances


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
    left_on: dict[str, int] = {}  # instance -> replicas not chosen yet
    for r in replicas:
        if r.node is not None:
            left_on[r.node] = left_on.get(r.node, 0) + 1

    def mates(r: ReplicaView) -> int:
        return left_on[r.node] - 1 if r.node is not None else 0

    candidates = [r for r in replicas if now - r.launched_at >= min_lifetime]
    chosen: list[str] = []
    while candidates and len(chosen) < count:
        allowed = [r for r in candidates if not r.serving or serving_left > keep_serving]
        if not allowed:
            break
        best = min(allowed, key=lambda r: (r.serving, mates(r), r.sessions, -r.launched_at, r.id))
        candidates.remove(best)
        if best.serving:
            serving_left -= 1
        if best.node is not None:
            left_on[best.node] -= 1
        chosen.append(best.id)
    return tuple(chosen)
