"""Shadow mode (a policy's ``mode: shadow``, docs/policies.md and docs/daemon.md): the policy decides on the
real load through the same ``policies.engine.decide`` -> ``controller.loop.planner.plan`` path as an active one,
but on a fleet of would-be replicas kept here, in memory, and nothing is journaled or done for them. What the
daemon journals after an action (cooldown marks, the target) is applied to this fleet instead, so the shadow
decisions follow the cooldowns, step limits, ``min_lifetime`` and the budget guard as the active policy's
would. A would-be replica counts as launched the moment it is decided and is never ready: no cloud replica
serves, so the metric the policy reads is the load without any (the truth of a shadow run).

Used by ``controller.loop.tick.PolicyRuntime.evaluate``; the fleet starts empty at start-up and whenever the
policy's mode changes.
"""

from __future__ import annotations

import dataclasses

from controller.loop.budget import Holding
from controller.loop.planner import Plan, ReplicaView, target_after
from controller.store.models import ReplicaState
from policies.types import Fleet

__all__ = ["ShadowFleet"]


class ShadowFleet:
    """The replicas a shadow policy would have, with the marks its decisions would have journaled."""

    def __init__(self) -> None:
        self.launched: list[tuple[str, float]] = []  # (id, decided at) of each would-be replica, oldest first
        self.last_scale_out: float | None = None
        self.last_scale_in: float | None = None
        self.target: int | None = None
        self._next = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self.launched)

    def fleet(self, real: Fleet) -> Fleet:
        """What ``decide`` reads: the would-be replicas and marks; ready and its history stay the real ones
        (the observed load is served without cloud replicas)."""
        return dataclasses.replace(real, active=len(self.launched), draining=0,
                                   launched_at=tuple(at for _, at in self.launched),
                                   last_scale_out=self.last_scale_out, last_scale_in=self.last_scale_in,
                                   target=self.target)

    def views(self) -> list[ReplicaView]:
        """The planner's view: each would-be replica as serving since it was decided."""
        return [ReplicaView(rid, ReplicaState.SERVING, at) for rid, at in self.launched]

    def holdings(self) -> list[Holding]:
        """What the budget guard counts: each would-be replica at the worst price of the policy's types."""
        return [Holding(key=rid) for rid, _ in self.launched]

    def apply(self, p: Plan, now: float) -> None:
        """What ``PolicyRuntime._act`` journals for a scaling action, on the would-be fleet."""
        actual = len(self.launched)
        if p.launch:
            for _ in range(p.launch):
                self._next += 1
                self.launched.append((f"shadow-{self._next}", now))
            self.last_scale_out = now
        if p.drain:
            gone = set(p.drain)
            self.launched = [(rid, at) for rid, at in self.launched if rid not in gone]
            self.last_scale_in = now
        if p.launch or p.drain:
            self.target = target_after(p, actual)
