"""Value types that travel between the controller and the pure decision strategies.

The controller builds ``Observation`` and ``Fleet`` from the world and hands them, with a policy and an
explicit ``now``, to ``policies.decide``; a ``Decision`` comes back. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Decision", "Direction", "Fleet", "Observation"]


@dataclass(frozen=True, slots=True)
class Observation:
    """One metric reading as the policy sees it.

    ``value`` is None when the source failed; ``age`` is seconds between the sample and ``now``;
    ``history`` holds older (timestamp, value) samples, oldest first, for smoothing and seasonality
    (any sequence: the daemon and the simulator pass a ``policies.history.HistoryView``, read in place
    rather than copied every tick; how much history each strategy needs is
    ``policies.engine.history_span(policy)``, see docs/decisions.md).
    """

    value: float | None
    age: float
    source: str = ""
    ok: bool = True
    error: str | None = None
    history: Sequence[tuple[float, float]] = ()

    @property
    def usable(self) -> bool:
        return self.ok and self.value is not None


@dataclass(frozen=True, slots=True)
class Fleet:
    """What the policy currently has in the cloud, as counts, plus the timing facts cooldowns need.

    ``active`` counts replicas that exist or are on their way (launching .. serving); ``ready`` those
    serving traffic; ``draining`` those on their way out (they hold budget but are not capacity). Times are seconds since the epoch (or any
    monotonic origin the caller uses consistently with ``now``).
    """

    active: int = 0
    ready: int = 0
    draining: int = 0
    last_scale_out: float | None = None
    last_scale_in: float | None = None
    # launch time of each active replica, to honour the minimum replica lifetime on scale-in
    launched_at: tuple[float, ...] = ()
    paused: bool = False
    # the count the last scaling action aimed at (None: none yet). Fewer active than this means replicas
    # failed since; launching back up to it is a replacement, not a new scale-out, and skips the cooldown
    target: int | None = None
    # (timestamp, ready count from then on) at each change, oldest first, covering the observation history:
    # a utilisation sample only says how much load there was once we know how many replicas served it.
    # Empty means "assume the current ``ready`` throughout".
    ready_history: Sequence[tuple[float, int]] = ()


class Direction(StrEnum):
    OUT = "out"
    IN = "in"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    direction: Direction
    reason: str
    # strategy-specific figures worth showing to ops (smoothed value, threshold crossed, ...)
    details: dict[str, float | str] = field(default_factory=dict)
